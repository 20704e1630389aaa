//! Replays every committed input through its fuzz target's function on the
//! stable toolchain: the corpora (`corpus/<target>/`) and the minimized
//! crashes found so far (`regressions/<target>/`). A panic fails the test.
//!
//! `cargo test -p confab-fuzz` (also part of `cargo test --workspace`).

use std::fs;
use std::path::Path;

/// Every file in `dir/<target>/`, run through `target`; how many there were.
fn replay(dir: &str, name: &str, target: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(name);
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).expect("readable input");
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "{name}: {} fails", path.display());
        n += 1;
    }
    n
}

#[test]
fn committed_corpora_pass() {
    for (name, target) in confab_fuzz::TARGETS {
        let n = replay("corpus", name, *target);
        assert!(
            n > 0,
            "{name}: no corpus committed under fuzz/corpus/{name}"
        );
    }
}

#[test]
fn committed_crashes_stay_fixed() {
    for (name, target) in confab_fuzz::TARGETS {
        replay("regressions", name, *target);
    }
}
