//! Fuzz target `media_upload`: see `confab_fuzz::media_upload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::media_upload(data));
