//! libFuzzer target `credentials`: see `keygate::fuzzing::credentials`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate::fuzzing::credentials(data);
});
