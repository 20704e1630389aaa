//! Fuzz target `tus_headers`: see `confab_fuzz::tus_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::tus_headers(data));
