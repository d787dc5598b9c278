//! libFuzzer target `token_request`: see `keygate::fuzzing::token_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate::fuzzing::token_request(data);
});
