//! Every file in `tests/attacks/` is a query that must be refused with the
//! rule named on its first line (`-- expect: RULE`).

use unseen_policy::{PolicyError, plan_query};

use crate::support::{joined_session, session};

fn expected_rule(text: &str) -> &str {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("-- expect: "))
        .map(str::trim)
        .expect("attack file starts with `-- expect: RULE`")
}

#[tokio::test]
async fn every_attack_in_the_corpus_is_refused_with_its_rule() {
    let (ctx, manifests) = joined_session(200, 600);
    let dir = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/attacks");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the corpus shrank to {}", files.len());
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rule = expected_rule(&text);
        let got = match plan_query(&ctx, &text, &manifests).await {
            Ok(_) => "admitted".to_string(),
            Err(PolicyError::Refused(r)) => {
                assert!(!r.message.is_empty());
                r.rule.to_string()
            }
            Err(PolicyError::Sql(_)) => "sql-error".to_string(),
            Err(e) => format!("other: {e}"),
        };
        if got != rule {
            failures.push(format!(
                "{}: expected {rule}, got {got}",
                file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "attacks not refused as expected:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn refusal_of_a_prohibited_column_names_the_column_and_the_rule() {
    let (ctx, manifests) = session(50);
    let Err(PolicyError::Refused(r)) =
        plan_query(&ctx, "SELECT id_number FROM residents", &manifests).await
    else {
        panic!("SELECT id_number was not refused");
    };
    assert_eq!(r.column.as_deref(), Some("residents.id_number"));
    assert!(
        r.message.contains("`id_number`") && r.message.contains("prohibited"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn refusal_of_raw_conditional_rows_says_what_is_allowed_instead() {
    let (ctx, manifests) = session(50);
    let Err(PolicyError::Refused(r)) =
        plan_query(&ctx, "SELECT annual_income FROM residents", &manifests).await
    else {
        panic!("raw annual_income rows were not refused");
    };
    assert_eq!(r.rule, "conditional-raw");
    assert!(r.message.contains("AVG(annual_income)"), "{}", r.message);
}

#[tokio::test]
async fn open_columns_are_admitted_without_noise() {
    let (ctx, manifests) = session(50);
    let admitted = plan_query(&ctx, "SELECT gender FROM residents", &manifests)
        .await
        .unwrap();
    assert!(matches!(admitted, unseen_policy::Admitted::Open(_)));
}
