//! libFuzzer target `x509`: see `keygate::fuzzing::x509`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate::fuzzing::x509(data);
});
