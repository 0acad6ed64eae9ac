use std::collections::HashMap;

use unseen_datasets::{DISTRICTS, DatasetKind, GenerateOptions, is_valid_resident_id};

use crate::{generate_and_read, ints, strings};

#[test]
fn residents_identity_columns_are_well_formed_and_consistent() {
    let batches = generate_and_read(DatasetKind::Residents, &GenerateOptions::new(30_000, 11));
    let ids = strings(&batches, "id_number");
    let years = ints(&batches, "birth_year");
    let genders = strings(&batches, "gender");
    let districts = strings(&batches, "district");
    let phones = strings(&batches, "phone");
    let names = strings(&batches, "name");
    let person_ids = ints(&batches, "person_id");
    let area: HashMap<&str, &str> = DISTRICTS.iter().copied().collect();

    assert_eq!(person_ids, (1..=30_000).collect::<Vec<i64>>());
    for i in 0..ids.len() {
        let id = &ids[i];
        assert!(is_valid_resident_id(id), "invalid id {id}");
        assert_eq!(&id[..6], area[districts[i].as_str()], "area code of {id}");
        assert_eq!(
            id[6..10].parse::<i64>().unwrap(),
            years[i],
            "birth year of {id}"
        );
        assert!((1940..=2008).contains(&years[i]));
        let sequence_digit = id.as_bytes()[16] - b'0';
        let male = sequence_digit % 2 == 1;
        assert_eq!(genders[i], if male { "M" } else { "F" }, "gender of {id}");

        let phone = phones[i].as_bytes();
        assert_eq!(phone.len(), 11);
        assert!(phone.iter().all(u8::is_ascii_digit));
        assert!(
            phone[0] == b'1' && b"358".contains(&phone[1]),
            "phone {}",
            phones[i]
        );

        assert!(
            (2..=3).contains(&names[i].chars().count()),
            "name {}",
            names[i]
        );
    }
}

#[test]
fn residents_distributions_look_like_the_design() {
    let rows = 200_000;
    let batches = generate_and_read(DatasetKind::Residents, &GenerateOptions::new(rows, 3));

    let mut by_district: HashMap<String, usize> = HashMap::new();
    for d in strings(&batches, "district") {
        *by_district.entry(d).or_default() += 1;
    }
    assert_eq!(by_district.len(), 12, "every district present");
    let smallest = *by_district.values().min().unwrap() as f64 / rows as f64;
    let largest = *by_district.values().max().unwrap() as f64 / rows as f64;
    assert!(smallest < 0.01, "smallest district share {smallest}");
    assert!(smallest > 0.003, "smallest district share {smallest}");
    assert!(largest > 0.4, "largest district share {largest}");

    let mut income = ints(&batches, "annual_income");
    assert!(income.iter().all(|&v| v >= 0));
    income.sort_unstable();
    let median = income[income.len() / 2];
    assert!(
        (50_000..=70_000).contains(&median),
        "income median {median}"
    );

    let sizes = ints(&batches, "household_size");
    assert!(sizes.iter().all(|s| (1..=8).contains(s)));

    let mut conditions: HashMap<String, usize> = HashMap::new();
    for c in strings(&batches, "chronic_condition") {
        *conditions.entry(c).or_default() += 1;
    }
    let most_common = conditions.iter().max_by_key(|(_, n)| **n).unwrap().0;
    assert_eq!(most_common, "none");
    assert_eq!(conditions.len(), 5);
}

#[test]
fn health_visit_dates_and_costs_are_in_range() {
    let batches = generate_and_read(DatasetKind::HealthVisits, &GenerateOptions::new(20_000, 8));
    let first = unseen_datasets::days_from_civil(2023, 1, 1);
    let last = unseen_datasets::days_from_civil(2024, 12, 31);
    for b in &batches {
        use arrow::array::AsArray;
        use arrow::datatypes::Date32Type;
        let dates = b
            .column_by_name("visit_date")
            .unwrap()
            .as_primitive::<Date32Type>();
        assert!(dates.values().iter().all(|d| (first..=last).contains(d)));
    }
    assert!(ints(&batches, "cost").iter().all(|&c| c > 0));
}
