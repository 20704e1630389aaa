//! Fuzz target `ordering`: see `confab_fuzz::ordering`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::ordering(data));
