//! Rebuild when the browser app's files change: they are embedded in the
//! binary (`src/http/web.rs`), and a file added to the folder would
//! otherwise not be noticed.

fn main() {
    println!("cargo:rerun-if-changed=web");
    println!("cargo:rerun-if-changed=web/app");
}
