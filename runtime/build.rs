//! Records the target triple for `kernel_info()`.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EDGE_RUNTIME_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
