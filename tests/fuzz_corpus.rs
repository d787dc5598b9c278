//! The fuzz corpora under `fuzz/corpus/<target>/`, replayed on stable Rust through the
//! same entry points the libFuzzer targets call (`keygate::fuzzing`). A crash found by
//! `ci/fuzz.sh` is fixed by adding its input here, where it stays a regression test.

use std::path::Path;

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let mut total = 0;
    for (name, target) in keygate::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "corpus {name} is empty");
        for path in entries {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "target {name} panicked on {}",
                path.display()
            );
            total += 1;
        }
    }
    assert!(total >= keygate::fuzzing::TARGETS.len());
}

#[test]
fn every_fuzz_target_has_a_libfuzzer_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (name, _) in keygate::fuzzing::TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .exists(),
            "fuzz/fuzz_targets/{name}.rs"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} in fuzz/Cargo.toml"
        );
    }
}
