//! Recording file names: turns what a publisher sends (`?name_prefix=`) and the stream
//! name into `{prefix}-{stream}-{UTC start}[-{n}].webm`, made only of `[A-Za-z0-9_-]`,
//! so no input can leave the record directory, hide a file, or make a name the
//! filesystem refuses; and the UTC timestamps used in names and in the catalog.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The prefix when the publisher gives none (or nothing usable).
pub const DEFAULT_PREFIX: &str = "noname";
/// Longest prefix kept, in bytes (all ASCII): names stay far below the usual 255.
pub const MAX_PREFIX: usize = 48;
/// Longest id (file stem) accepted from a sidecar or a URL.
const MAX_ID: usize = 200;

/// Keeps `[A-Za-z0-9_-]`, turns every run of anything else into one `_`, trims `_` and
/// `-` from both ends and cuts to [`MAX_PREFIX`]; empty becomes [`DEFAULT_PREFIX`].
pub fn sanitize_part(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max));
    let mut pending_underscore = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            if pending_underscore && !out.is_empty() {
                out.push('_');
            }
            pending_underscore = false;
            out.push(c);
        } else {
            pending_underscore = true;
        }
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    let trimmed = out.trim_matches(|c| c == '_' || c == '-');
    if trimmed.is_empty() {
        DEFAULT_PREFIX.to_owned()
    } else {
        trimmed.to_owned()
    }
}

pub fn sanitize_prefix(raw: Option<&str>) -> String {
    sanitize_part(raw.unwrap_or(DEFAULT_PREFIX), MAX_PREFIX)
}

/// The file stem (also the recording's id) for attempt `n` (1, 2, ...) at a free name.
pub fn stem(prefix: &str, stream: &str, started: SystemTime, n: u32) -> String {
    let prefix = sanitize_part(prefix, MAX_PREFIX);
    let stream = sanitize_part(stream, 64);
    let when = compact_utc(started);
    match n {
        0 | 1 => format!("{prefix}-{stream}-{when}"),
        n => format!("{prefix}-{stream}-{when}-{n}"),
    }
}

/// Whether `id` could be one of our stems: the only ids ever joined to the directory.
pub fn is_safe_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && !id.starts_with(['-', '_'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
        since.subsec_millis(),
    )
}

/// `20251122T031500Z`: sortable, and no `:` (which some filesystems refuse).
pub fn compact_utc(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(time);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2025-11-22T03:15:00.123Z`, for the catalog and the API.
pub fn rfc3339(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Reads back what [`rfc3339`] wrote.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = if b[19] == b'.' {
        num(20..23).unwrap_or(0)
    } else {
        0
    };
    // Howard Hinnant's days-from-civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_prefixes_become_safe_names() {
        assert_eq!(sanitize_prefix(Some("../../etc/passwd")), "etc_passwd");
        assert_eq!(sanitize_prefix(Some("..")), DEFAULT_PREFIX);
        assert_eq!(sanitize_prefix(Some("a\0b/c\\d")), "a_b_c_d");
        assert_eq!(sanitize_prefix(Some("  café  show ")), "caf_show");
        assert_eq!(sanitize_prefix(Some("")), DEFAULT_PREFIX);
        assert_eq!(sanitize_prefix(None), DEFAULT_PREFIX);
        assert_eq!(sanitize_prefix(Some(&"x".repeat(5000))).len(), MAX_PREFIX);
        assert_eq!(sanitize_prefix(Some("-.hidden")), "hidden");
    }

    #[test]
    fn stems_carry_the_utc_start_and_a_counter() {
        let t = UNIX_EPOCH + Duration::from_millis(1_763_781_300_123);
        assert_eq!(compact_utc(t), "20251122T031500Z");
        assert_eq!(rfc3339(t), "2025-11-22T03:15:00.123Z");
        assert_eq!(stem("noname", "cam", t, 1), "noname-cam-20251122T031500Z");
        assert_eq!(stem("noname", "cam", t, 3), "noname-cam-20251122T031500Z-3");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(compact_utc(leap), "20000229T000000Z");
    }

    proptest! {
        #[test]
        fn any_input_gives_a_safe_id(raw in any::<String>(), stream in "[A-Za-z0-9_-]{1,64}", n in 1u32..1000) {
            let prefix = sanitize_prefix(Some(&raw));
            prop_assert!(!prefix.is_empty() && prefix.len() <= MAX_PREFIX);
            let id = stem(&prefix, &stream, SystemTime::now(), n);
            prop_assert!(is_safe_id(&id), "{id}");
            prop_assert!(id.len() + ".webm.json".len() < 255);
        }
    }
}
