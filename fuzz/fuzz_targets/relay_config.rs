#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vstats::fuzzing::relay_config(data));
