//! The runtime API for upstreams (HAProxy's runtime API is the model):
//!
//! - `GET /api/upstreams`: every forward service's upstreams with their
//!   weight, state (`ready`, `drain`, `maint`), health and connections;
//! - `POST /api/upstreams/add?service=S&upstream=IP:PORT[&weight=N][&max_conns=N]`;
//! - `POST /api/upstreams/set?service=S&upstream=NAME[&weight=N][&state=ready|drain|maint]`;
//! - `POST /api/upstreams/remove?service=S&upstream=NAME`.
//!
//! A change is applied on every shard as a reload is (one change at a
//! time, SIGHUP reloads included) and answers with the service's new pool;
//! `/status` and `/metrics` show it. A later SIGHUP makes the file the
//! truth again. Changes need `Authorization: Bearer TOKEN` when a token is
//! configured, and without one are only taken on a loopback listener.

use cores::pool::upstream::{AdminState, UpstreamSpec};
use ops::http::{Request, Response};
use serde_json::json;

use crate::app::state::App;
use crate::services::{ServiceId, UpstreamChange};

/// Answers a request under `/api/`.
pub async fn route(app: &App, req: &Request) -> Response {
    let action = req.path.strip_prefix("/api/upstreams").unwrap_or("?");
    match (req.method.as_str(), action) {
        ("GET" | "HEAD", "") => match list(app).await {
            Ok(v) => Response::json(200, format!("{v:#}\n")),
            Err(e) => Response::text(503, format!("gathering upstreams: {e}\n")),
        },
        ("POST", "/add" | "/set" | "/remove") => {
            if let Err(refused) = allowed(app, req) {
                return refused;
            }
            let params = Params::parse(req.query.as_deref().unwrap_or(""));
            let change = match change(&action[1..], &params) {
                Ok(c) => c,
                Err(e) => return Response::text(400, format!("{e}\n")),
            };
            let Some(service) = params.get("service") else {
                return Response::text(400, "service=NAME is missing\n");
            };
            apply(app, service, &change).await
        }
        (_, "" | "/add" | "/set" | "/remove") => {
            Response::text(405, "GET /api/upstreams; POST /api/upstreams/{add,set,remove}\n")
        }
        _ => Response::text(404, "not found (GET /api/upstreams; POST /api/upstreams/{add,set,remove})\n"),
    }
}

/// Whether a change may be made: with a token configured, only with it;
/// without one, only on a loopback listener.
fn allowed(app: &App, req: &Request) -> Result<(), Response> {
    let token = app.config().admin_token.clone();
    match token {
        Some(token) => {
            let given = req.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
            if given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
                Ok(())
            } else {
                Err(Response::text(401, "changes need Authorization: Bearer <the [admin] token>\n"))
            }
        }
        None if app.admin_addr.is_some_and(|a| a.ip().is_loopback()) => Ok(()),
        None => Err(Response::text(
            403,
            "changes on a non-loopback admin address need a token ([admin] token, --admin-token)\n",
        )),
    }
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The change a request asks for.
fn change(action: &str, p: &Params) -> Result<UpstreamChange, String> {
    let upstream = p.get("upstream").ok_or("upstream=... is missing")?.to_string();
    let number = |key: &str| -> Result<Option<u32>, String> {
        p.get(key).map(|v| v.parse::<u32>().map_err(|_| format!("{key}={v:?}: not a number"))).transpose()
    };
    match action {
        "add" => {
            let mut text = upstream.clone();
            if let Some(w) = number("weight")? {
                text += &format!(",weight={w}");
            }
            if let Some(m) = number("max_conns")? {
                text += &format!(",max-conns={m}");
            }
            // Never a lookup on the shard that serves this: names are for
            // the file (or a DNS upstream).
            let no_lookup = |host: &str, _port: u16| -> std::io::Result<Option<std::net::SocketAddr>> {
                Err(std::io::Error::other(format!("{host}: give an IP address here")))
            };
            UpstreamSpec::parse_with(&text, no_lookup).map(UpstreamChange::Add).map_err(|e| e.to_string())
        }
        "set" => {
            let state = match p.get("state") {
                Some(s) => Some(AdminState::parse(s).ok_or(format!("state={s:?}: ready, drain or maint"))?),
                None => None,
            };
            let weight = number("weight")?;
            if state.is_none() && weight.is_none() {
                return Err("set what? weight=N and/or state=ready|drain|maint".into());
            }
            Ok(UpstreamChange::Set { upstream, weight, state })
        }
        _ => Ok(UpstreamChange::Remove(upstream)),
    }
}

/// Applies `change` through the API and answers with the new pool.
async fn apply(app: &App, name: &str, change: &UpstreamChange) -> Response {
    let (i, new) = match crate::app::change::apply(app, name, change).await {
        Ok(applied) => applied,
        Err((code, e)) => return Response::text(code, format!("{e}\n")),
    };
    tracing::info!(service = name, "admin API: {change:?}");
    match new.status(ServiceId(i as u64)).await {
        Ok(v) => {
            Response::json(200, format!("{:#}\n", json!({"service": name, "upstreams": v["upstreams"]})))
        }
        Err(e) => Response::text(200, format!("applied; status unavailable: {e}\n")),
    }
}

/// `GET /api/upstreams`.
async fn list(app: &App) -> Result<serde_json::Value, shard::SubmitError> {
    let services = app.config().services.clone();
    let mut out = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let v = s.status(ServiceId(i as u64)).await?;
        if let Some(upstreams) = v.get("upstreams") {
            out.push(json!({"service": s.name(), "kind": s.kind(), "upstreams": upstreams}));
        }
    }
    Ok(json!({"services": out}))
}

/// Query parameters, percent-decoded.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Params {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Params(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// `%XX` and `+` decoded; a malformed escape is kept as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let p = Params::parse("service=web&upstream=%5B%3A%3A1%5D%3A80&weight=3&x&bad=%zz&end=%4&u=%C3%A9%");
        assert_eq!(p.get("upstream"), Some("[::1]:80"));
        assert_eq!((p.get("service"), p.get("weight"), p.get("x")), (Some("web"), Some("3"), Some("")));
        assert_eq!((p.get("bad"), p.get("end")), (Some("%zz"), Some("%4")));
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(p.get("u"), Some("é%"));
        assert_eq!(decode("é%é"), "é%é", "never cuts a character");
    }

    #[test]
    fn changes_from_parameters() {
        let p = |q: &str| Params::parse(q);
        assert!(
            matches!(change("add", &p("upstream=10.0.0.1:80&weight=3")), Ok(UpstreamChange::Add(s)) if s.weight == 3)
        );
        let named = change("add", &p("upstream=db.example:80")).unwrap_err();
        assert!(named.contains("give an IP address"), "{named}");
        let set = change("set", &p("upstream=10.0.0.1:80&state=drain")).expect("set");
        assert_eq!(
            set,
            UpstreamChange::Set {
                upstream: "10.0.0.1:80".into(),
                weight: None,
                state: Some(AdminState::Drain)
            }
        );
        assert!(change("set", &p("upstream=10.0.0.1:80")).unwrap_err().contains("set what"));
        assert!(change("set", &p("upstream=a&state=off")).unwrap_err().contains("ready, drain or maint"));
        assert!(change("remove", &p("")).unwrap_err().contains("upstream="));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!same(b"0123", b"01234"));
    }
}
