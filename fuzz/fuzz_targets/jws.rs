//! libFuzzer target `jws`: see `keygate::fuzzing::jws_and_claims`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate::fuzzing::jws_and_claims(data);
});
