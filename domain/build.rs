//! Builds the example guests in `guests/` for wasm32 and embeds them, so the
//! `unseen` binary carries the demo's jobs with it.

use std::path::PathBuf;

const GUESTS: &[&str] = &[
    "district_income",
    "chronic_disease",
    "refused_id_number",
    "refused_raw_income",
    "udf_light",
    "udf_gcd",
    "sme_credit_risk",
    "udf_sme_score",
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = unseen_guest_build::guests_dir();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.join("guests-target");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../udf-sdk/src").display()
    );
    let dir = unseen_guest_build::build(&target).unwrap_or_else(|e| panic!("{e}"));
    let mut code = String::new();
    for guest in GUESTS {
        let path = unseen_guest_build::wasm_path(&dir, guest);
        code.push_str(&format!(
            "/// The `{guest}` guest module.\npub const {}: &[u8] = include_bytes!({:?});\n",
            guest.to_uppercase(),
            path.display().to_string()
        ));
    }
    std::fs::write(out.join("guests.rs"), code).expect("write guests.rs");
}
