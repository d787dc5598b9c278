//! libFuzzer target `key_file`: see `keygate::fuzzing::key_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate::fuzzing::key_file(data);
});
