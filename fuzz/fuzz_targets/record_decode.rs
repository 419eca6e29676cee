//! Arbitrary bytes as a signed record: decode, verify, check freshness, offer to a registry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::record::Freshness;
use vx6_core::registry::RegistryLimits;
use vx6_core::{Registry, SignedRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(record) = SignedRecord::decode(data) else {
        return;
    };
    // Whatever decodes must re-encode to the very same bytes.
    assert_eq!(record.as_bytes(), data);
    let now = 1_800_000_000;
    let _ = Freshness::default().check(&record, now);
    let mut registry = Registry::new(RegistryLimits::default());
    if registry.insert(record, now).is_ok() {
        let bytes = registry.to_bytes();
        let (reloaded, _) = Registry::from_bytes(&bytes, RegistryLimits::default(), now)
            .expect("a registry we wrote must load");
        assert_eq!(reloaded.to_bytes(), bytes);
    }
});
