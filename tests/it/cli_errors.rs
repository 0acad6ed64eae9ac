//! Bad input on the foundation's CLI paths gets a clear error, never a panic.

use crate::support::{fails, ok};

#[test]
fn registering_with_a_wrong_manifest_names_the_column_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();
    let parquet = dir.path().join("r.parquet");
    ok(&[
        "dataset",
        "generate",
        "residents",
        "--rows",
        "500",
        "--out",
        parquet.to_str().unwrap(),
    ]);
    ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        d,
    ]);
    let manifest = ok(&["dataset", "manifest", "residents"]);
    let cases = [
        (
            manifest.replace("name = \"phone\"", "name = \"mobile\""),
            "`mobile` is in the manifest but not in the Parquet file",
        ),
        (
            manifest.replacen("class = \"conditional\"", "class = \"secret\"", 1),
            "class `secret` is unknown",
        ),
        (
            manifest.replacen(
                "name = \"person_id\"\ntype = \"int64\"",
                "name = \"person_id\"\ntype = \"utf8\"",
                1,
            ),
            "column `person_id` is declared `utf8` but the Parquet file stores Int64",
        ),
        (
            manifest.replace("bounds = [0, 1000000]", "bounds = [0.5, 1000000]"),
            "column `annual_income`: bounds must be whole numbers",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("m{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = fails(&[
            "dataset",
            "register",
            "--name",
            "residents",
            "--parquet",
            parquet.to_str().unwrap(),
            "--manifest",
            path.to_str().unwrap(),
            "--as",
            "admin",
            "--data-dir",
            d,
        ]);
        assert!(
            out.contains(expected),
            "case {i}: expected `{expected}` in:\n{out}"
        );
    }
    // Nothing was half-registered: the correct manifest still registers.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &manifest).unwrap();
    ok(&[
        "dataset",
        "register",
        "--name",
        "residents",
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        good.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
}

#[test]
fn a_file_that_is_not_parquet_or_not_wasm_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"definitely not parquet").unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, ok(&["dataset", "manifest", "residents"])).unwrap();
    ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        d,
    ]);
    ok(&[
        "user",
        "add",
        "--id",
        "dev",
        "--name",
        "D",
        "--role",
        "developer",
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
    let out = fails(&[
        "dataset",
        "register",
        "--name",
        "residents",
        "--parquet",
        junk.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
    assert!(out.contains("junk.bin"), "{out}");
    let out = fails(&[
        "job",
        "submit",
        "--grant",
        "grant-none",
        "--module",
        junk.to_str().unwrap(),
        "--as",
        "dev",
        "--data-dir",
        d,
    ]);
    assert!(out.contains("not a WebAssembly module"), "{out}");
    let out = fails(&[
        "ledger",
        "verify",
        "--data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
    ]);
    assert!(out.contains("cannot read"), "{out}");
}
