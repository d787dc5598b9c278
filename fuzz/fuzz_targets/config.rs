//! libFuzzer target `config`: see `keygate::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate::fuzzing::config(data);
});
