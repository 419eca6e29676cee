//! The wall clock, read here and nowhere in core.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. A clock set before 1970 reads as 0, which makes every record
/// look far-future and be rejected rather than accepted forever.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "in 6d 23h", "in 59s", "expired": how far away `at` is from `now`, for people.
pub fn human_until(at: u64, now: u64) -> String {
    let Some(secs) = at.checked_sub(now).filter(|s| *s > 0) else {
        return "expired".to_owned();
    };
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("in {secs}s"),
        (0, 0, m) => format!("in {m}m"),
        (0, h, m) => format!("in {h}h {m}m"),
        (d, h, _) => format!("in {d}d {h}h"),
    }
}
