//! Arbitrary text as a path policy's settings (`--sla`, config.toml, and the control socket's
//! `policy` command): parsing accepts or names the problem, never panics, and what it accepts
//! writes out as text that reads back as the same policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::default().with_settings(text) {
        let written = policy.to_string();
        assert_eq!(Policy::default().with_settings(&written), Ok(policy), "{written}");
        assert!(policy.sla.max_loss_permille.is_none_or(|p| p <= 1000));
    }
});
