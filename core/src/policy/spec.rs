//! The text form of a policy, as `--sla`, `config.toml` and the control socket write it:
//! comma-separated `key=value` settings, each overriding one field.
//!
//! `via=direct|relay|auto`, `hops=N`, `max-rtt=150ms`, `max-loss=5%`, `max-jitter=30ms`,
//! `hold-down=10s`, and the bare words `strict` and `best-of-bad`.

use std::fmt;
use std::time::Duration;

use super::{OnViolation, Policy, Prefer};

/// Why a policy setting was refused (each variant names the setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyParseError {
    /// A key no policy has.
    #[error(
        "unknown policy setting {0:?} (expected via, hops, max-rtt, max-loss, max-jitter, hold-down, strict or best-of-bad)"
    )]
    UnknownKey(String),
    /// A value that does not parse for its key.
    #[error("bad value {value:?} for {key}: {expected}")]
    BadValue {
        /// The setting.
        key: &'static str,
        /// What was given.
        value: String,
        /// What would do.
        expected: &'static str,
    },
    /// Nothing between two commas, or at either end.
    #[error("empty policy setting")]
    Empty,
}

/// Most relays a policy may ask for (as circuits allow).
const MAX_HOPS: u8 = crate::relay::control::MAX_HOPS as u8;
/// The longest duration a setting takes (a day), so arithmetic on it never overflows.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

impl Policy {
    /// This policy with the settings of `text` applied over it.
    pub fn with_settings(mut self, text: &str) -> Result<Policy, PolicyParseError> {
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(PolicyParseError::Empty);
            }
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match key {
                "via" => {
                    self.prefer = match value {
                        "direct" => Prefer::Direct,
                        "relay" => Prefer::Relay,
                        "auto" => Prefer::Auto,
                        _ => return Err(bad("via", value, "direct, relay or auto")),
                    }
                }
                "hops" => {
                    self.hops = value
                        .parse::<u8>()
                        .ok()
                        .filter(|h| (1..=MAX_HOPS).contains(h))
                        .ok_or_else(|| bad("hops", value, "a number from 1 to 8"))?
                }
                "max-rtt" => self.sla.max_rtt = Some(duration("max-rtt", value)?),
                "max-jitter" => self.sla.max_jitter = Some(duration("max-jitter", value)?),
                "hold-down" => self.hold_down = duration("hold-down", value)?,
                "max-loss" => self.sla.max_loss_permille = Some(percent("max-loss", value)?),
                "strict" if value.is_empty() => self.on_violation = OnViolation::Strict,
                "best-of-bad" if value.is_empty() => self.on_violation = OnViolation::BestOfBad,
                _ => return Err(PolicyParseError::UnknownKey(key.to_string())),
            }
        }
        Ok(self)
    }
}

fn bad(key: &'static str, value: &str, expected: &'static str) -> PolicyParseError {
    PolicyParseError::BadValue {
        key,
        value: value.to_string(),
        expected,
    }
}

/// `150ms` or `10s`.
fn duration(key: &'static str, value: &str) -> Result<Duration, PolicyParseError> {
    let expected = "a whole number of ms or s, such as 150ms or 10s, up to a day";
    let (digits, unit) = match value.strip_suffix("ms") {
        Some(d) => (d, 1u64),
        None => (
            value
                .strip_suffix('s')
                .ok_or_else(|| bad(key, value, expected))?,
            1000,
        ),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| bad(key, value, expected))
}

/// `5%` or `0.5%`, as parts per thousand.
fn percent(key: &'static str, value: &str) -> Result<u16, PolicyParseError> {
    let expected = "a percentage from 0% to 100% with at most one decimal, such as 5% or 0.5%";
    let number = value
        .strip_suffix('%')
        .ok_or_else(|| bad(key, value, expected))?;
    let (whole, tenth) = number.split_once('.').unwrap_or((number, "0"));
    let ok = |s: &str, max_len| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !ok(whole, 3) || !ok(tenth, 1) {
        return Err(bad(key, value, expected));
    }
    let permille = whole.parse::<u16>().unwrap_or(u16::MAX).saturating_mul(10)
        + tenth.parse::<u16>().unwrap_or(0);
    (permille <= 1000)
        .then_some(permille)
        .ok_or_else(|| bad(key, value, expected))
}

impl fmt::Display for Policy {
    /// The settings that give this policy, in the form [`Policy::with_settings`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = match self.prefer {
            Prefer::Direct => "direct",
            Prefer::Relay => "relay",
            Prefer::Auto => "auto",
        };
        write!(f, "via={via},hops={}", self.hops)?;
        let ms = |d: Duration| d.as_millis();
        // Whole seconds as seconds (10s), the rest in milliseconds: both read back.
        let human = |d: Duration| match d.as_millis() % 1000 {
            0 => format!("{}s", d.as_secs()),
            _ => format!("{}ms", d.as_millis()),
        };
        if let Some(d) = self.sla.max_rtt {
            write!(f, ",max-rtt={}ms", ms(d))?;
        }
        if let Some(p) = self.sla.max_loss_permille {
            write!(f, ",max-loss={}.{}%", p / 10, p % 10)?;
        }
        if let Some(d) = self.sla.max_jitter {
            write!(f, ",max-jitter={}ms", ms(d))?;
        }
        write!(f, ",hold-down={}", human(self.hold_down))?;
        match self.on_violation {
            OnViolation::Strict => f.write_str(",strict"),
            OnViolation::BestOfBad => f.write_str(",best-of-bad"),
        }
    }
}
