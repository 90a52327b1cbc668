//! Durations as written in flags and in `spec.dkim.rotationInterval`.
//!
//! The accepted form is Go's (what Kubernetes users already write): a sequence of
//! decimal numbers with units `ms`, `s`, `m`, `h`, e.g. `2160h` or `1h30m`. Flags
//! also accept `d` (24h) for readability: `--dkim-retire-after 7d`.

use std::time::Duration;

/// Parses a duration such as `72h`, `1h30m`, `500ms` or `7d`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 90s, 15m, 72h or 7d");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("invalid duration {s:?}: too long"))
}

/// Formats a duration the way users write it (`72h`, `90s`, `1h30m`).
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_and_days() {
        assert_eq!(parse("2160h").unwrap(), Duration::from_secs(2160 * 3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["", "h", "10", "10x", "-1h", "1h-"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // Too long for any clock: an error, not a panic.
        assert!(
            parse("99999999999999999999h")
                .unwrap_err()
                .contains("too long")
        );
        assert!(parse(&format!("{}h", "9".repeat(400))).is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["72h", "90s", "1h30m", "1h0m5s"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        assert_eq!(format(Duration::from_secs(72 * 3600)), "72h");
    }
}
