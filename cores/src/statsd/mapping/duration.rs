//! Go's `time.ParseDuration`, for `ttl` and `max_age`: a sign, then one or
//! more decimal numbers each with a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`,
//! `m`, `h`), like `1m30s`, `1.5h`, `-2s`; a bare `0` is zero.

const LIMIT: u64 = 1 << 63;

/// The duration in nanoseconds, or Go's message for the text.
pub(super) fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (neg, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (ns, tail) = component(rest, text)?;
        rest = tail;
        total = total.checked_add(ns).filter(|&t| t <= LIMIT).ok_or_else(invalid)?;
    }
    if neg {
        // -(1<<63) is i64::MIN, the one value whose magnitude is LIMIT.
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// One `<number><unit>` from the front of `s`: its nanoseconds and the rest.
fn component<'a>(s: &'a str, whole: &str) -> Result<(u64, &'a str), String> {
    let invalid = || format!("time: invalid duration {whole:?}");
    if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
        return Err(invalid());
    }
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut int: u64 = 0;
    for d in s[..int_len].bytes() {
        int = int
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(d - b'0')))
            .filter(|&x| x <= LIMIT)
            .ok_or_else(invalid)?;
    }
    let mut rest = &s[int_len..];
    let (mut frac, mut scale, mut frac_len) = (0u64, 1f64, 0);
    if let Some(after) = rest.strip_prefix('.') {
        frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
        // Digits past what fits are ignored, as Go does.
        for d in after[..frac_len].bytes() {
            match frac.checked_mul(10).map(|x| x + u64::from(d - b'0')) {
                Some(x) if x <= LIMIT && frac <= (LIMIT - 1) / 10 => {
                    frac = x;
                    scale *= 10.0;
                }
                _ => break,
            }
        }
        rest = &after[frac_len..];
    }
    if int_len == 0 && frac_len == 0 {
        return Err(invalid());
    }
    let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
    if unit_len == 0 {
        return Err(format!("time: missing unit in duration {whole:?}"));
    }
    let (unit_name, rest) = rest.split_at(unit_len);
    let unit = unit_ns(unit_name)
        .ok_or_else(|| format!("time: unknown unit {unit_name:?} in duration {whole:?}"))?;
    let mut ns = int.checked_mul(unit).filter(|&v| v <= LIMIT).ok_or_else(invalid)?;
    if frac > 0 {
        // Go's own rounding: through float64, truncated.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let part = (frac as f64 * (unit as f64 / scale)) as u64;
        ns = ns.checked_add(part).filter(|&v| v <= LIMIT).ok_or_else(invalid)?;
    }
    Ok((ns, rest))
}

fn unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;

    #[test]
    fn parses_as_go() {
        const S: i64 = 1_000_000_000;
        for (text, want) in [
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("10s", 10 * S),
            ("1m30s", 90 * S),
            ("500ms", S / 2),
            ("1h", 3600 * S),
            ("1m2s", 62 * S),
            ("1.5h", 5400 * S),
            (".5s", S / 2),
            ("1.s", S),
            ("-2s", -2 * S),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("1us", 1_000),
            ("3ns", 3),
            ("1h1m1s1ms1us1ns", 3_661_001_001_001),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.3333333333333333333h", 1_200_000_000_000),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn rejects_as_go() {
        for (text, want) in [
            ("", "time: invalid duration \"\""),
            ("-", "time: invalid duration \"-\""),
            ("10", "time: missing unit in duration \"10\""),
            ("1m30", "time: missing unit in duration \"1m30\""),
            ("10x", "time: unknown unit \"x\" in duration \"10x\""),
            ("1 s", "time: unknown unit \" s\" in duration \"1 s\""),
            ("s", "time: invalid duration \"s\""),
            (".s", "time: invalid duration \".s\""),
            ("1e3s", "time: unknown unit \"e\" in duration \"1e3s\""),
            ("2562047h47m16.854775808s", "time: invalid duration \"2562047h47m16.854775808s\""),
            ("9999999999999999999h", "time: invalid duration \"9999999999999999999h\""),
        ] {
            assert_eq!(parse_go_duration(text), Err(want.to_string()), "{text:?}");
        }
    }

    proptest::proptest! {
        /// Never panics; whole seconds round-trip.
        #[test]
        fn total(text in "[-+0-9.a-zµ]{0,12}", secs in 0i64..1_000_000) {
            let _ = parse_go_duration(&text);
            proptest::prop_assert_eq!(parse_go_duration(&format!("{secs}s")), Ok(secs * 1_000_000_000));
        }
    }
}
