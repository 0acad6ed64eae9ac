//! Identifier formats: PRC resident ID numbers (GB 11643, ISO 7064 MOD 11-2)
//! and unified social credit codes (GB 32100-2015 with a GB 11714
//! organisation code inside), plus the district table both use.
//!
//! Everything here is a pure function over values.

use crate::calendar::days_in_month;

/// The twelve Beijing districts the datasets use: (name, 6-digit area code).
pub const DISTRICTS: [(&str, &str); 12] = [
    ("东城区", "110101"),
    ("西城区", "110102"),
    ("朝阳区", "110105"),
    ("丰台区", "110106"),
    ("石景山区", "110107"),
    ("海淀区", "110108"),
    ("门头沟区", "110109"),
    ("房山区", "110111"),
    ("通州区", "110112"),
    ("顺义区", "110113"),
    ("昌平区", "110114"),
    ("大兴区", "110115"),
];

/// Indices into [`DISTRICTS`] from most to least populous; the i-th entry
/// gets the i-th Zipf weight.
const DISTRICT_RANKING: [usize; 12] = [2, 5, 3, 10, 11, 8, 7, 9, 1, 0, 4, 6];

/// `k^-1.8` for ranks k = 1..=12, written out so the table does not depend on
/// the platform's `powf`. The smallest share is about 0.67%.
const ZIPF_1_8: [f64; 12] = [
    1.0,
    0.287174589,
    0.138414549,
    0.082469244,
    0.055189186,
    0.039749141,
    0.03011782,
    0.023683071,
    0.019158587,
    0.015848932,
    0.013350366,
    0.011414943,
];

/// Maps a uniform draw in `[0, 1)` to a district index, Zipf-skewed with
/// exponent 1.8 over [`DISTRICT_RANKING`].
pub(crate) fn district_for_uniform(u: f64) -> usize {
    let total: f64 = ZIPF_1_8.iter().sum();
    let mut target = u * total;
    for (rank, weight) in ZIPF_1_8.iter().enumerate() {
        if target < *weight {
            return DISTRICT_RANKING[rank];
        }
        target -= weight;
    }
    DISTRICT_RANKING[DISTRICT_RANKING.len() - 1]
}

const RESIDENT_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const RESIDENT_CHECK: [u8; 11] = *b"10X98765432";

/// The ISO 7064 MOD 11-2 check character (`0`-`9` or `X`) of a resident ID
/// number, given its first 17 characters.
///
/// # Panics
/// If `first17` is not exactly 17 ASCII digits; check the input with
/// [`is_valid_resident_id`] or build it from digits.
pub fn resident_id_check_char(first17: &str) -> char {
    let bytes = first17.as_bytes();
    assert!(
        bytes.len() == 17 && bytes.iter().all(u8::is_ascii_digit),
        "a resident ID body is 17 ASCII digits, got {first17:?}"
    );
    resident_check_from_digits(bytes)
}

/// Check character over 17 ASCII digits that are known to be valid.
pub(crate) fn resident_check_from_digits(digits: &[u8]) -> char {
    let sum: u32 = digits
        .iter()
        .zip(RESIDENT_WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    char::from(RESIDENT_CHECK[(sum % 11) as usize])
}

/// Whether `s` is a well-formed 18-character resident ID number: 6-digit
/// area code, a real calendar date `YYYYMMDD` (years 1800..=2099), a 3-digit
/// sequence and a matching check character (`X` upper-case only).
pub fn is_valid_resident_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(6..10), num(10..12), num(12..14));
    if !(1800..=2099).contains(&year) || !(1..=12).contains(&month) {
        return false;
    }
    if day == 0 || day > days_in_month(year as i32, month) {
        return false;
    }
    char::from(b[17]) == resident_check_from_digits(&b[..17])
}

/// The 31 characters a unified social credit code may use (no I, O, S, V, Z).
pub const CREDIT_CODE_CHARSET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

fn credit_value(c: u8) -> Option<u32> {
    CREDIT_CODE_CHARSET
        .as_bytes()
        .iter()
        .position(|&x| x == c)
        .map(|p| p as u32)
}

/// The GB 32100-2015 check character (18th character) of a unified social
/// credit code, given its first 17 characters.
///
/// # Panics
/// If `first17` is not 17 characters of [`CREDIT_CODE_CHARSET`]; check the
/// input with [`is_valid_credit_code`] first.
pub fn credit_code_check_char(first17: &str) -> char {
    let b = first17.as_bytes();
    assert!(
        b.len() == 17 && b.iter().all(|&c| credit_value(c).is_some()),
        "a credit code body is 17 characters of {CREDIT_CODE_CHARSET}, got {first17:?}"
    );
    credit_check(b)
}

fn credit_check(b: &[u8]) -> char {
    let sum: u32 = b
        .iter()
        .zip(CREDIT_WEIGHTS)
        .map(|(&c, w)| credit_value(c).unwrap_or(0) * w)
        .sum();
    let value = (31 - sum % 31) % 31;
    char::from(CREDIT_CODE_CHARSET.as_bytes()[value as usize])
}

/// The GB 11714 check character of a 9-character organisation code, given
/// its 8-character body (digits and upper-case letters, A=10 .. Z=35).
/// Returns `None` if a character is neither.
pub fn organisation_code_check_char(body8: &str) -> Option<char> {
    let b = body8.as_bytes();
    if b.len() != 8 {
        return None;
    }
    let mut sum = 0;
    for (&c, w) in b.iter().zip(ORG_WEIGHTS) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return None,
        };
        sum += v * w;
    }
    Some(match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        v => char::from(b'0' + v as u8),
    })
}

/// Whether `s` is a well-formed unified social credit code: 18 characters of
/// [`CREDIT_CODE_CHARSET`], a 6-digit area code at positions 3-8, an
/// organisation code at 9-17 whose last character is its GB 11714 check
/// character, and a matching GB 32100 check character at 18.
pub fn is_valid_credit_code(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 18 || !b.iter().all(|&c| credit_value(c).is_some()) {
        return false;
    }
    if !b[2..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    // Charset membership above makes these slices valid UTF-8 (ASCII).
    let org_ok = organisation_code_check_char(&s[8..16]) == Some(char::from(b[16]));
    org_ok && char::from(b[17]) == credit_check(&b[..17])
}

/// SplitMix64: a fixed bijective mix so per-index attributes are pure
/// functions of the index.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many distinct enterprises [`credit_code`] can name.
pub const MAX_ENTERPRISES: u64 = 100_000_000;

/// District index (into [`DISTRICTS`]) of the enterprise in row `index`
/// (0-based) of `enterprises`; a pure function of the index, Zipf-skewed.
pub fn enterprise_district(index: u64) -> usize {
    let u = (splitmix64(index) >> 11) as f64 / (1u64 << 53) as f64;
    district_for_uniform(u)
}

/// The unified social credit code of the enterprise in row `index` (0-based)
/// of `enterprises`, for any seed. Distinct for distinct
/// `index < MAX_ENTERPRISES`; the area code is that of
/// [`enterprise_district`]`(index)`.
///
/// Layout: `9` (market regulation authority), an organisation type (`1`
/// company, `2` sole trader, `3` cooperative), the area code, an 8-digit
/// organisation body (an affine permutation of the index modulo 10^8) with
/// its GB 11714 check character, and the GB 32100 check character.
pub fn credit_code(index: u64) -> String {
    let mut out = String::with_capacity(18);
    push_credit_code(&mut out, index);
    out
}

/// Appends [`credit_code`]`(index)` to `out`.
pub(crate) fn push_credit_code(out: &mut String, index: u64) {
    let h = splitmix64(index ^ 0x5EED_C0DE);
    let org_type = match h % 20 {
        0..=16 => '1',
        17..=18 => '2',
        _ => '3',
    };
    let start = out.len();
    out.push('9');
    out.push(org_type);
    out.push_str(DISTRICTS[enterprise_district(index)].1);
    let body = ((index % MAX_ENTERPRISES) * 73_939_133 + 12_345_679) % MAX_ENTERPRISES;
    crate::generate::push_padded(out, body, 8);
    let org_check = organisation_code_check_char(&out[start + 8..start + 16])
        .unwrap_or_else(|| unreachable!("body is ASCII digits"));
    out.push(org_check);
    let check = credit_check(&out.as_bytes()[start..start + 17]);
    out.push(check);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_resident_id_check_chars() {
        // Public worked examples of GB 11643.
        assert_eq!(resident_id_check_char("11010519491231002"), 'X');
        assert_eq!(resident_id_check_char("44030819900101001"), '7');
        assert!(is_valid_resident_id("11010519491231002X"));
        assert!(!is_valid_resident_id("110105194912310021"));
        assert!(!is_valid_resident_id("11010519490231002X"));
    }

    #[test]
    fn known_credit_code_is_valid() {
        // A published code (Huawei Technologies Co., Ltd.).
        assert!(is_valid_credit_code("914403001922038216"));
        assert_eq!(credit_code_check_char("91440300192203821"), '6');
        assert!(!is_valid_credit_code("914403001922038217"));
        assert!(!is_valid_credit_code("91440300192203821"));
    }

    #[test]
    fn generated_credit_codes_are_valid_and_distinct() {
        let codes: Vec<String> = (0..50_000).map(credit_code).collect();
        assert!(codes.iter().all(|c| is_valid_credit_code(c)));
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        for (i, code) in codes.iter().enumerate().take(1000) {
            let area = DISTRICTS[enterprise_district(i as u64)].1;
            assert_eq!(&code[2..8], area);
        }
    }

    #[test]
    fn zipf_smallest_district_is_under_one_percent() {
        let total: f64 = ZIPF_1_8.iter().sum();
        assert!(ZIPF_1_8[11] / total < 0.01);
        let mut ranks = DISTRICT_RANKING;
        ranks.sort_unstable();
        assert_eq!(ranks, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }
}
