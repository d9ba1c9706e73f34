//! `GET /`: the status page, rendered on the server from the `/status`
//! model (so it is a plain page with JavaScript off), with a few lines of
//! script that fetch `/status?format=html` (the same tables) every two
//! seconds and swap them in. No external assets: style and script are in
//! the page, a few kilobytes.
//!
//! Every figure cell carries `data-k` (`<service>.<field>`, or
//! `<service>/<upstream>.<field>`) and every upstream row `data-upstream`
//! and a state class, for scripts and tests to read.

use std::fmt::Write as _;

use serde_json::Value;

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:8px 12px;display:flex;flex-wrap:wrap;gap:4px 16px}\
header b{font-size:15px}main{padding:8px 12px}section{background:#fff;border:1px solid #d9dde5;\
border-radius:4px;margin:0 0 12px;padding:8px;overflow-x:auto}h2{font-size:14px;margin:0 0 6px;display:flex;flex-wrap:wrap;align-items:center;gap:4px 12px}\
svg{background:#f6f7f9;border:1px solid #eceef2}\
table{border-collapse:collapse;width:100%;white-space:nowrap}th,td{padding:2px 6px;text-align:right;\
border-bottom:1px solid #eceef2}th:first-child,td:first-child{text-align:left}th{font-weight:600;\
color:#556}tr.up td:first-child{border-left:4px solid #2e9e4f}tr.down{background:#fde8e8}\
tr.down td:first-child{border-left:4px solid #d33}tr.drain,tr.maint{background:#fff5dc}\
tr.drain td:first-child,tr.maint td:first-child{border-left:4px solid #d9a400}.bar{display:inline-block;\
width:80px;height:8px;background:#eceef2;vertical-align:middle}.bar i{display:block;height:8px;\
background:#4a7bd0}.warn{color:#b00;font-weight:600}.dim{color:#889;font-weight:400}";

const SCRIPT: &str = "setInterval(function(){fetch('/status?format=html',{cache:'no-store'})\
.then(function(r){return r.ok?r.text():null}).then(function(h){if(h!==null){\
document.getElementById('live').innerHTML=h}}).catch(function(){})},2000);";

/// The whole page around [`tables`].
pub fn page(status: &Value) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!doctype html><html lang=en><head><meta charset=utf-8>");
    out.push_str("<meta name=viewport content=\"width=device-width,initial-scale=1\">");
    out.push_str("<title>appliance status</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body><main id=live>");
    out.push_str(&tables(status));
    out.push_str("</main><script>");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>\n");
    out
}

/// The live part: the process, the shards, each service.
pub fn tables(status: &Value) -> String {
    let mut out = String::with_capacity(12 * 1024);
    header(&mut out, status);
    shards(&mut out, status);
    for service in status["services"].as_array().into_iter().flatten() {
        match service["kind"].as_str() {
            Some("forward") => forward(&mut out, service),
            Some("aggregate") => aggregate(&mut out, service),
            _ => other(&mut out, service),
        }
    }
    out
}

fn header(out: &mut String, s: &Value) {
    let state = if s["draining"] == true {
        "<span class=warn>draining</span>"
    } else if s["ready"] == true {
        "ready"
    } else {
        "<span class=warn>starting</span>"
    };
    let _ = write!(
        out,
        "<header><b>appliance {}</b><span>pid {}</span><span>up {}</span><span>{state}</span>\
         <span>config {}</span><span>reloads {} ok, {} failed</span></header>",
        esc(&text(&s["version"])),
        text(&s["pid"]),
        duration(s["uptime_seconds"].as_f64().unwrap_or(0.0)),
        esc(&text(&s["config"])),
        text(&s["reloads"]["ok"]),
        text(&s["reloads"]["failed"]),
    );
}

fn shards(out: &mut String, s: &Value) {
    out.push_str("<section><h2>Shards</h2><table><tr><th>shard</th><th>cpu</th><th>core</th><th>load</th>");
    out.push_str("<th>loop turns/s</th><th>parks/s</th><th>tasks</th><th>io_uring in flight</th>");
    out.push_str("<th>mesh sent/s</th><th>mesh received/s</th></tr>");
    let placement = s["placement"].as_array().cloned().unwrap_or_default();
    for shard in s["shards"].as_array().into_iter().flatten() {
        let id = shard["shard"].as_u64().unwrap_or(0);
        let at = placement.iter().find(|p| p["shard"].as_u64() == Some(id)).cloned().unwrap_or_default();
        let rate = |k: &str| shard["rates"][k].as_f64();
        let load = rate("cpu_seconds").map(|l| (l * 100.0).clamp(0.0, 100.0));
        let bar = match load {
            Some(p) => format!("<span class=bar><i style=\"width:{p:.0}%\"></i></span> {p:.0}%"),
            None => "<span class=dim>…</span>".into(),
        };
        let k = format!("shard{id}");
        let _ = write!(
            out,
            "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{bar}</td>",
            text(&at["cpu"]),
            text(&at["core"])
        );
        cell(out, &k, "loop_turns_rate", rate("loop_turns"));
        cell(out, &k, "parks_rate", rate("parks"));
        num(out, &k, "tasks", &shard["tasks"]);
        num(out, &k, "ops_in_flight", &shard["ops_in_flight"]);
        cell(out, &k, "mesh_sent_rate", rate("mesh_sent"));
        cell(out, &k, "mesh_received_rate", rate("mesh_received"));
        out.push_str("</tr>");
    }
    out.push_str("</table></section>");
}

/// A service's heading: name, kind, listeners, and its chart.
fn title(out: &mut String, s: &Value, unit: &str) {
    let name = esc(&text(&s["name"]));
    let listen: Vec<String> = s["listen"].as_array().into_iter().flatten().map(|l| esc(&text(l))).collect();
    let _ = write!(
        out,
        "<section><h2>{name} <span class=dim>{} on {}</span> ",
        text(&s["kind"]),
        listen.join(", ")
    );
    if let Some(points) = s["chart_rates"].as_array() {
        let values: Vec<f64> = points.iter().filter_map(Value::as_f64).collect();
        chart(out, &values, unit);
    }
    out.push_str("</h2>");
}

fn forward(out: &mut String, s: &Value) {
    title(out, s, "conn/s");
    let name = text(&s["name"]);
    let c = &s["counters"];
    out.push_str("<table><tr><th>active</th><th>accepted</th><th>conn/s</th><th>retries</th>");
    out.push_str("<th>refused: over limit</th><th>no upstream</th><th>client conns</th><th>client rate</th>");
    out.push_str("<th>client table</th><th>resets</th><th>idle closed</th></tr><tr>");
    num(out, &name, "active", &s["active"]);
    num(out, &name, "accepted", &c["accepted"]);
    cell(out, &name, "accepted_rate", s["rates"]["accepted"].as_f64());
    for field in [
        "retries",
        "refused_over_limit",
        "refused_no_upstream",
        "refused_client_conns",
        "refused_client_rate",
        "refused_client_table",
        "resets",
        "idle_closed",
    ] {
        num(out, &name, field, &c[field]);
    }
    out.push_str("</tr></table><table><tr><th>upstream</th><th>address</th><th>state</th><th>weight</th>");
    out.push_str("<th>active</th><th>connections</th><th>conn/s</th><th>bytes up</th><th>bytes down</th>");
    out.push_str("<th>connect errors</th><th>refused</th><th>connect p50</th><th>p90</th><th>p99</th></tr>");
    for u in s["upstreams"].as_array().into_iter().flatten() {
        upstream(out, &name, u);
    }
    out.push_str("</table></section>");
}

fn upstream(out: &mut String, service: &str, u: &Value) {
    let uname = text(&u["name"]);
    let health = if u["up"] == true { "up" } else { "down" };
    let state = match u["state"].as_str() {
        Some("drain") => "drain",
        Some("maint") => "maint",
        _ => health,
    };
    let k = format!("{service}/{uname}");
    let c = &u["counters"];
    let _ = write!(
        out,
        "<tr class={state} data-upstream=\"{}\"><td>{}</td><td>{}</td><td data-k=\"{}.state\">{state}</td>",
        esc(&k),
        esc(&uname),
        esc(&text(&u["addr"])),
        esc(&k)
    );
    num(out, &k, "weight", &u["weight"]);
    num(out, &k, "active", &u["active"]);
    num(out, &k, "connections", &c["total"]);
    cell(out, &k, "connections_rate", u["rates"]["total"].as_f64());
    bytes(out, &k, "bytes_up", &c["bytes_up"]);
    bytes(out, &k, "bytes_down", &c["bytes_down"]);
    num(out, &k, "connect_errors", &c["connect_errors"]);
    num(out, &k, "refused_over_limit", &c["refused_over_limit"]);
    for q in ["p50", "p90", "p99"] {
        let v = &u["connect_ms"][q];
        let shown = v.as_f64().map_or("–".into(), |ms| format!("≤{ms} ms"));
        let _ = write!(out, "<td data-k=\"{}.connect_{q}\">{shown}</td>", esc(&k));
    }
    out.push_str("</tr>");
}

fn aggregate(out: &mut String, s: &Value) {
    title(out, s, "lines/s");
    let name = text(&s["name"]);
    let c = &s["counters"];
    out.push_str("<table><tr><th>lines</th><th>lines/s</th><th>metrics</th><th>keys</th>");
    out.push_str("<th>flushes</th><th>last flush</th><th>flush errors</th><th>held intervals</th>");
    out.push_str("<th>receiving</th></tr><tr>");
    num(out, &name, "lines", &c["lines"]);
    cell(out, &name, "lines_rate", s["rates"]["lines"].as_f64());
    num(out, &name, "metrics", &c["metrics"]);
    num(out, &name, "keys", &c["keys"]);
    num(out, &name, "flushes", &c["flushes"]);
    let age = s["last_flush_age_seconds"].as_f64().map_or("never".into(), |a| format!("{} ago", duration(a)));
    let _ = write!(out, "<td data-k=\"{}.last_flush_age\">{age}</td>", esc(&name));
    warn_num(out, &name, "flush_errors", &c["flush_errors"]);
    num(out, &name, "held_intervals", &c["held_intervals"]);
    let _ = write!(out, "<td>{}</td></tr></table>", esc(&text(&s["receiving"])));
    // Every way a line or a key was lost or refused: the kernel's drops
    // always, the others once they happened.
    out.push_str("<table><tr><th>dropped or refused</th><th>count</th><th>per second</th></tr>");
    let losses = c.as_object().into_iter().flatten().filter(|(k, v)| {
        k.as_str() == "kernel_drops"
            || (v.as_u64().unwrap_or(0) > 0
                && (k.starts_with("dropped.")
                    || matches!(k.as_str(), "rule_drops" | "origin_refused" | "keys_refused" | "truncated")))
    });
    for (k, v) in losses {
        let _ = write!(out, "<tr><td>{}</td>", esc(k));
        warn_num(out, &name, k, v);
        cell(out, &name, &format!("{k}_rate"), s["rates"][k].as_f64());
        out.push_str("</tr>");
    }
    out.push_str("</table></section>");
}

fn other(out: &mut String, s: &Value) {
    title(out, s, "");
    out.push_str("</section>");
}

/// A small line chart of `values` (oldest first), with its last value.
fn chart(out: &mut String, values: &[f64], unit: &str) {
    if values.len() < 2 {
        let _ = write!(out, "<span class=dim>chart from the second sample on (every 2 s)</span>");
        return;
    }
    let (w, h) = (240.0, 28.0);
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let step = if values.len() > 1 { w / (values.len() - 1) as f64 } else { 0.0 };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!("{:.1},{:.1}", i as f64 * step, h - if max > 0.0 { v / max * (h - 2.0) } else { 0.0 })
        })
        .collect();
    let _ = write!(
        out,
        "<svg width={w} height={h} viewBox=\"0 0 {w} {h}\" role=img><title>last {} samples, max {max:.1} {unit}</title>\
         <polyline fill=none stroke=#4a7bd0 stroke-width=1.5 points=\"{}\"/></svg> \
         <span class=dim>{:.1} {unit} (max {max:.1})</span>",
        values.len(),
        points.join(" "),
        values.last().copied().unwrap_or(0.0)
    );
}

fn num(out: &mut String, group: &str, field: &str, v: &Value) {
    let _ = write!(out, "<td data-k=\"{}.{field}\">{}</td>", esc(group), esc(&text(v)));
}

/// A count shown in red when not zero.
fn warn_num(out: &mut String, group: &str, field: &str, v: &Value) {
    let class = if v.as_u64().unwrap_or(0) > 0 { " class=warn" } else { "" };
    let _ = write!(out, "<td{class} data-k=\"{}.{}\">{}</td>", esc(group), esc(field), esc(&text(v)));
}

fn cell(out: &mut String, group: &str, field: &str, rate: Option<f64>) {
    let shown = rate.map_or("…".into(), |r| format!("{r:.1}"));
    let _ = write!(out, "<td data-k=\"{}.{}\">{shown}</td>", esc(group), esc(field));
}

fn bytes(out: &mut String, group: &str, field: &str, v: &Value) {
    let n = v.as_u64().unwrap_or(0);
    let shown = match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    };
    let _ = write!(out, "<td data-k=\"{}.{field}\" title=\"{n}\">{shown}</td>", esc(group));
}

/// A JSON value as shown: strings bare, null as a dash.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{secs:.0}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Escapes text for an HTML element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({
            "version": "0.1.0", "pid": 7, "uptime_seconds": 75.0, "ready": true, "draining": false,
            "config": "/etc/<x>.toml", "reloads": {"ok": 1, "failed": 0},
            "placement": [{"shard": 0, "cpu": 2, "core": 1}],
            "shards": [{"shard": 0, "tasks": 5, "ops_in_flight": 3,
                        "counters": {"cpu_seconds": 1.0}, "rates": {"cpu_seconds": 0.25, "loop_turns": 100.0}}],
            "services": [
                {"name": "web", "kind": "forward", "listen": ["tcp 127.0.0.1:80"], "active": 2,
                 "chart": "accepted", "chart_rates": [1.0, 3.0, 2.0],
                 "counters": {"accepted": 12, "retries": 1, "refused_no_upstream": 4},
                 "rates": {"accepted": 2.0},
                 "upstreams": [
                    {"name": "a\"<b>", "addr": "10.0.0.1:80", "weight": 1, "state": "ready", "up": true, "active": 2,
                     "counters": {"total": 12, "bytes_up": 2048, "bytes_down": 5}, "connect_ms": {"p50": 0.064}},
                    {"name": "b", "addr": "10.0.0.2:80", "weight": 1, "state": "ready", "up": false,
                     "counters": {"total": 0}},
                 ]},
                {"name": "statsd", "kind": "aggregate", "listen": ["udp 127.0.0.1:8125"], "receiving": "kernel",
                 "last_flush_age_seconds": 3.0,
                 "counters": {"lines": 40, "metrics": 39, "keys": 3, "dropped.no_value": 1, "kernel_drops": 0}},
            ],
        })
    }

    /// The text of the cell whose `data-k` is `key`.
    fn cell_of(html: &str, key: &str) -> Option<String> {
        let at = html.find(&format!("data-k=\"{key}\""))?;
        let rest = &html[at..];
        let start = rest.find('>')? + 1;
        Some(rest[start..start + rest[start..].find('<')?].to_string())
    }

    #[test]
    fn figures_are_in_their_cells_and_names_are_escaped() {
        let html = page(&status());
        assert!(html.starts_with("<!doctype html>") && html.contains("<main id=live>"));
        assert_eq!(cell_of(&html, "web.accepted").as_deref(), Some("12"));
        assert_eq!(cell_of(&html, "web.refused_no_upstream").as_deref(), Some("4"));
        assert_eq!(cell_of(&html, "web.accepted_rate").as_deref(), Some("2.0"));
        assert_eq!(cell_of(&html, "web/a&quot;&lt;b&gt;.connections").as_deref(), Some("12"));
        assert_eq!(cell_of(&html, "web/a&quot;&lt;b&gt;.bytes_up").as_deref(), Some("2.0 KiB"));
        assert_eq!(cell_of(&html, "web/b.state").as_deref(), Some("down"));
        assert!(html.contains("<tr class=down data-upstream=\"web/b\">"), "{html}");
        assert_eq!(cell_of(&html, "statsd.lines").as_deref(), Some("40"));
        assert_eq!(cell_of(&html, "statsd.dropped.no_value").as_deref(), Some("1"));
        assert_eq!(cell_of(&html, "statsd.last_flush_age").as_deref(), Some("3s ago"));
        assert!(html.contains("width:25%"), "shard load bar");
        assert!(html.contains("/etc/&lt;x&gt;.toml") && !html.contains("<b>\""), "escaped");
        assert!(html.contains("<polyline"), "a chart");
        assert!(html.len() < 16 * 1024, "{} bytes", html.len());
        // A narrow window: the page scales to the device, and each box
        // scrolls its tables sideways instead of widening the page.
        assert!(html.contains("name=viewport content=\"width=device-width"));
        assert!(STYLE.contains("section{") && STYLE.contains("overflow-x:auto"));
    }

    #[test]
    fn a_model_with_nothing_in_it_still_renders() {
        let html = tables(&json!({}));
        assert!(html.contains("<header>"));
        assert!(html.contains("Shards"));
    }
}
