//! Arbitrary bytes as a registry file. A fuzzer cannot forge a checksum by chance, so the first
//! byte chooses whether the rest is checked as a whole file or wrapped in a valid header first,
//! which sends the fuzzer's bytes into the payload and record parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::Registry;
use vx6_core::registry::{RegistryLimits, SNAPSHOT_VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut file = b"VX6R".to_vec();
        file.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        file.extend_from_slice(blake3::hash(rest).as_bytes());
        file.extend_from_slice(rest);
        file
    };
    if let Ok((registry, report)) = Registry::from_bytes(&file, RegistryLimits::default(), 1_800_000_000) {
        assert_eq!(registry.len(), report.loaded);
        // Saving what was loaded and loading it again is stable.
        let saved = registry.to_bytes();
        let (again, _) = Registry::from_bytes(&saved, RegistryLimits::default(), 1_800_000_000)
            .expect("a registry we wrote must load");
        assert_eq!(again.to_bytes(), saved);
    }
});
