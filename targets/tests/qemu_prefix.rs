//! `ci/qemu-sysroot.sh` builds the private QEMU prefix that every armv7 guest reads.
//! On a fresh clone many guests start at once (parallel test binaries, a fleet of two
//! simulated boards), so the build must be safe to race: a CI run once failed when two
//! starts moved the same temporary file.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/qemu-sysroot.sh")
}

#[test]
fn concurrent_first_starts_all_get_a_complete_prefix() {
    let dir = tempfile::tempdir().unwrap();
    // Spawn all before waiting for any, so the builds overlap.
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new("bash")
                .arg(script())
                .arg("imx6")
                .env("EDGE_QEMU_PREFIX_DIR", dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash starts")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "qemu-sysroot.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.trim_end().ends_with("/imx6"), "printed {printed:?}");
    }
    {
        let base = dir.path();
        let prefix = base.join("imx6");
        let cpuinfo = std::fs::read_to_string(prefix.join("proc/cpuinfo")).unwrap();
        assert!(
            cpuinfo.contains("ARMv7"),
            "board cpuinfo in {}",
            prefix.display()
        );
        let cache_level = prefix.join("sys/devices/system/cpu/cpu0/cache/index0/level");
        assert_eq!(std::fs::read_to_string(cache_level).unwrap().trim(), "0");
        let shim = prefix.join("opt/edge/libfixed_getrandom.so");
        let bytes = std::fs::read(&shim).unwrap();
        assert_eq!(
            &bytes[..4],
            b"\x7fELF",
            "{} is an ELF object",
            shim.display()
        );
        let leftovers: Vec<_> = std::fs::read_dir(prefix.join("opt/edge"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
