fn main() {
    // Exposed as BUILD_TRIPLE so the "host" profile can name the real triple.
    println!(
        "cargo:rustc-env=TARGET_TRIPLE={}",
        std::env::var("TARGET").unwrap()
    );
}
