//! `.cargo/config.toml` and `Cross.toml` restate parts of the target profiles (cargo
//! and cross cannot read our TOML); these tests keep them in agreement.

use std::path::PathBuf;
use target_profiles::Profile;

fn repo_file(rel: &str) -> toml::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn cross_profiles() -> Vec<Profile> {
    Profile::all()
        .unwrap()
        .into_iter()
        .filter(|p| p.triple != "native")
        .collect()
}

#[test]
fn cargo_config_matches_profiles() {
    let config = repo_file(".cargo/config.toml");
    for p in cross_profiles() {
        let section = &config["target"][p.triple.as_str()];
        assert_eq!(
            section["linker"].as_str(),
            p.linker.as_deref(),
            "linker of {} in .cargo/config.toml",
            p.triple
        );
        let flags: Vec<&str> = section["rustflags"]
            .as_array()
            .unwrap_or_else(|| panic!("no rustflags for {}", p.triple))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(flags, p.rustflags, "rustflags of {}", p.triple);
    }
}

#[test]
fn cross_toml_parses_and_matches_profiles() {
    let cross = repo_file("Cross.toml");
    for p in cross_profiles() {
        let section = cross["target"]
            .get(p.triple.as_str())
            .unwrap_or_else(|| panic!("Cross.toml has no [target.{}]", p.triple));
        assert_eq!(
            section["image"].as_str(),
            p.cross_image.as_deref(),
            "cross image of {}",
            p.triple
        );
    }
}

#[test]
fn armv7_runner_is_the_profile_runner() {
    let config = repo_file(".cargo/config.toml");
    let runner = config["target"]["armv7-unknown-linux-gnueabihf"]["runner"]
        .as_array()
        .unwrap();
    assert_eq!(runner[0].as_str(), Some("ci/qemu-run"));
    let script =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/qemu-run"))
            .unwrap();
    // The runner takes the CPU and sysroot from the profile, not from literals.
    assert!(script.contains("get qemu_cpu"), "{script}");
}
