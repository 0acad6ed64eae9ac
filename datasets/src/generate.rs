//! Row generators: one seeded random stream per dataset, drawn row by row
//! and cut into Arrow batches. Nothing here touches files.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use crate::calendar::{days_from_civil, days_in_month};
use crate::ids::{
    DISTRICTS, district_for_uniform, enterprise_district, push_credit_code,
    resident_check_from_digits,
};

/// Produces the next `rows` rows of a dataset as one batch.
pub(crate) trait BatchSource {
    fn next_batch(&mut self, rows: usize) -> Result<RecordBatch, ArrowError>;
}

/// Appends `value` as decimal digits, left-padded with zeros to `width`.
pub(crate) fn push_padded(out: &mut String, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = value;
    let mut len = 0;
    while v > 0 || len == 0 {
        digits[19 - len] = b'0' + (v % 10) as u8;
        v /= 10;
        len += 1;
    }
    for _ in len..width {
        out.push('0');
    }
    for &d in &digits[20 - len..] {
        out.push(char::from(d));
    }
}

/// Cumulative weights for drawing an index with a uniform `[0, 1)` value.
struct Weighted<const N: usize> {
    cumulative: [f64; N],
}

impl<const N: usize> Weighted<N> {
    fn new(weights: [f64; N]) -> Self {
        let total: f64 = weights.iter().sum();
        let mut cumulative = [0.0; N];
        let mut acc = 0.0;
        for (c, w) in cumulative.iter_mut().zip(weights) {
            acc += w / total;
            *c = acc;
        }
        Self { cumulative }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.random();
        self.cumulative.iter().position(|&c| u < c).unwrap_or(N - 1)
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// `median * exp(sigma * z)`: a log-normal draw with that median.
fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len() as u32) as usize]
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(Arc::clone(schema), columns)
}

const SURNAMES: [&str; 60] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁",
    "任", "沈", "姚", "卢", "姜", "崔", "钟", "谭", "陆", "汪", "范", "金",
];

const GIVEN: [&str; 64] = [
    "伟", "芳", "娜", "秀", "英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟",
    "涛", "明", "超", "兰", "霞", "平", "刚", "桂", "华", "玉", "萍", "红", "玲", "芬", "燕", "彬",
    "鹏", "辉", "建", "国", "志", "宇", "浩", "然", "子", "轩", "欣", "怡", "梓", "涵", "一", "诺",
    "雨", "桐", "思", "远", "博", "文", "嘉", "晨", "佳", "琪", "昊", "天", "俊", "婷", "雪", "磊",
];

/// Chronic conditions other than "none", with their relative frequencies.
const CONDITIONS: [&str; 4] = ["hypertension", "diabetes", "heart_disease", "copd"];

/// `residents`: one row per person, person_id 1..=rows in order.
pub(crate) struct Residents {
    rng: ChaCha8Rng,
    schema: SchemaRef,
    next_id: i64,
    household: Weighted<8>,
    condition: Weighted<4>,
}

impl Residents {
    pub(crate) fn new(seed: u64, schema: SchemaRef) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            schema,
            next_id: 1,
            household: Weighted::new([0.16, 0.30, 0.26, 0.14, 0.07, 0.04, 0.02, 0.01]),
            condition: Weighted::new([0.45, 0.25, 0.18, 0.12]),
        }
    }
}

impl BatchSource for Residents {
    fn next_batch(&mut self, n: usize) -> Result<RecordBatch, ArrowError> {
        let rng = &mut self.rng;
        let mut person_id = Int64Builder::with_capacity(n);
        let mut id_number = StringBuilder::with_capacity(n, n * 18);
        let mut name = StringBuilder::with_capacity(n, n * 9);
        let mut phone = StringBuilder::with_capacity(n, n * 11);
        let mut birth_year = Int64Builder::with_capacity(n);
        let mut gender = StringBuilder::with_capacity(n, n);
        let mut district = StringBuilder::with_capacity(n, n * 12);
        let mut household_size = Int64Builder::with_capacity(n);
        let mut annual_income = Int64Builder::with_capacity(n);
        let mut chronic = StringBuilder::with_capacity(n, n * 8);
        let mut buf = String::with_capacity(32);

        for _ in 0..n {
            person_id.append_value(self.next_id);
            self.next_id += 1;

            let (district_name, area) = DISTRICTS[district_for_uniform(rng.random())];
            let male: bool = rng.random();
            let year = rng.random_range(1940..=2008_u32);
            let month = rng.random_range(1..=12_u32);
            let day = rng.random_range(1..=days_in_month(year as i32, month));
            let sequence = rng.random_range(0..500_u32) * 2 + u32::from(male);

            buf.clear();
            buf.push_str(area);
            push_padded(&mut buf, u64::from(year), 4);
            push_padded(&mut buf, u64::from(month), 2);
            push_padded(&mut buf, u64::from(day), 2);
            push_padded(&mut buf, u64::from(sequence), 3);
            let check = resident_check_from_digits(buf.as_bytes());
            buf.push(check);
            id_number.append_value(&buf);

            buf.clear();
            buf.push_str(pick(rng, &SURNAMES));
            buf.push_str(pick(rng, &GIVEN));
            if rng.random_bool(0.7) {
                buf.push_str(pick(rng, &GIVEN));
            }
            name.append_value(&buf);

            buf.clear();
            buf.push('1');
            buf.push(['3', '5', '8'][rng.random_range(0..3_u32) as usize]);
            push_padded(
                &mut buf,
                u64::from(rng.random_range(0..1_000_000_000_u32)),
                9,
            );
            phone.append_value(&buf);

            birth_year.append_value(i64::from(year));
            gender.append_value(if male { "M" } else { "F" });
            district.append_value(district_name);
            household_size.append_value(self.household.sample(rng) as i64 + 1);
            let income = log_normal(rng, 60_000.0, 0.75).round().max(0.0);
            annual_income.append_value(income as i64);

            let age = 2024 - year;
            let p_none = match age {
                0..40 => 0.92,
                40..60 => 0.75,
                _ => 0.5,
            };
            if rng.random_bool(p_none) {
                chronic.append_value("none");
            } else {
                chronic.append_value(CONDITIONS[self.condition.sample(rng)]);
            }
        }

        batch(
            &self.schema,
            vec![
                Arc::new(person_id.finish()),
                Arc::new(id_number.finish()),
                Arc::new(name.finish()),
                Arc::new(phone.finish()),
                Arc::new(birth_year.finish()),
                Arc::new(gender.finish()),
                Arc::new(district.finish()),
                Arc::new(household_size.finish()),
                Arc::new(annual_income.finish()),
                Arc::new(chronic.finish()),
            ],
        )
    }
}

/// ICD-10 codes generated in `health_visits`: (code, relative frequency,
/// median cost in yuan).
pub(crate) const DIAGNOSES: [(&str, f64, f64); 12] = [
    ("Z00.0", 0.16, 150.0),
    ("J06.9", 0.18, 220.0),
    ("I10", 0.15, 320.0),
    ("E11.9", 0.11, 450.0),
    ("K29.7", 0.08, 380.0),
    ("M54.5", 0.07, 300.0),
    ("N39.0", 0.05, 260.0),
    ("J44.1", 0.05, 2_600.0),
    ("I25.1", 0.05, 1_800.0),
    ("J18.9", 0.05, 4_200.0),
    ("S52.5", 0.03, 3_500.0),
    ("I63.9", 0.02, 16_000.0),
];

/// First and last day of `health_visits.visit_date`.
pub(crate) const VISIT_FIRST: (i32, u32, u32) = (2023, 1, 1);
pub(crate) const VISIT_LAST: (i32, u32, u32) = (2024, 12, 31);

/// `health_visits`: person_id uniform in 1..=persons.
pub(crate) struct HealthVisits {
    rng: ChaCha8Rng,
    schema: SchemaRef,
    persons: u64,
    diagnosis: Weighted<12>,
    first_day: i32,
    span_days: u32,
}

impl HealthVisits {
    pub(crate) fn new(seed: u64, schema: SchemaRef, persons: u64) -> Self {
        let first_day = days_from_civil(VISIT_FIRST.0, VISIT_FIRST.1, VISIT_FIRST.2);
        let last_day = days_from_civil(VISIT_LAST.0, VISIT_LAST.1, VISIT_LAST.2);
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            schema,
            persons,
            diagnosis: Weighted::new(DIAGNOSES.map(|d| d.1)),
            first_day,
            span_days: (last_day - first_day + 1) as u32,
        }
    }
}

impl BatchSource for HealthVisits {
    fn next_batch(&mut self, n: usize) -> Result<RecordBatch, ArrowError> {
        let rng = &mut self.rng;
        let mut person_id = Int64Builder::with_capacity(n);
        let mut visit_date = Date32Builder::with_capacity(n);
        let mut diagnosis = StringBuilder::with_capacity(n, n * 5);
        let mut cost = Int64Builder::with_capacity(n);
        for _ in 0..n {
            person_id.append_value(rng.random_range(1..=self.persons) as i64);
            let offset = rng.random_range(0..self.span_days);
            visit_date.append_value(self.first_day + offset as i32);
            let (code, _, median) = DIAGNOSES[self.diagnosis.sample(rng)];
            diagnosis.append_value(code);
            cost.append_value(log_normal(rng, median, 0.8).round().max(1.0) as i64);
        }
        batch(
            &self.schema,
            vec![
                Arc::new(person_id.finish()),
                Arc::new(visit_date.finish()),
                Arc::new(diagnosis.finish()),
                Arc::new(cost.finish()),
            ],
        )
    }
}

/// Industries of `enterprises`: (name, relative frequency, word used in the
/// company name, capital multiplier).
pub(crate) const INDUSTRIES: [(&str, f64, &str, f64); 8] = [
    ("retail", 0.22, "商贸", 0.6),
    ("software", 0.16, "科技", 1.0),
    ("catering", 0.12, "餐饮", 0.4),
    ("manufacturing", 0.12, "制造", 2.0),
    ("construction", 0.11, "建设", 2.5),
    ("logistics", 0.10, "物流", 1.2),
    ("finance", 0.05, "投资", 5.0),
    ("agriculture", 0.04, "农业", 0.8),
];

const TRADE_CHARS: [&str; 40] = [
    "华", "信", "恒", "达", "瑞", "丰", "盛", "隆", "鑫", "源", "泰", "安", "宏", "远", "博", "通",
    "新", "创", "金", "正", "和", "嘉", "宇", "汇", "德", "明", "诚", "益", "康", "辰", "京", "中",
    "海", "天", "翔", "锦", "永", "立", "卓", "智",
];

/// Latest `founded_year`; years run back from here.
pub(crate) const FOUNDED_LAST: i64 = 2024;
pub(crate) const FOUNDED_FIRST: i64 = 1980;

/// `enterprises`: row `i` (0-based) is the enterprise named by `credit_code(i)`.
pub(crate) struct Enterprises {
    rng: ChaCha8Rng,
    schema: SchemaRef,
    next_index: u64,
    industry: Weighted<8>,
}

impl Enterprises {
    pub(crate) fn new(seed: u64, schema: SchemaRef) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            schema,
            next_index: 0,
            industry: Weighted::new(INDUSTRIES.map(|i| i.1)),
        }
    }
}

impl BatchSource for Enterprises {
    fn next_batch(&mut self, n: usize) -> Result<RecordBatch, ArrowError> {
        let rng = &mut self.rng;
        let mut credit_code = StringBuilder::with_capacity(n, n * 18);
        let mut name = StringBuilder::with_capacity(n, n * 30);
        let mut industry = StringBuilder::with_capacity(n, n * 10);
        let mut district = StringBuilder::with_capacity(n, n * 12);
        let mut capital = Int64Builder::with_capacity(n);
        let mut founded = Int64Builder::with_capacity(n);
        let mut buf = String::with_capacity(64);
        for _ in 0..n {
            let index = self.next_index;
            self.next_index += 1;

            buf.clear();
            push_credit_code(&mut buf, index);
            credit_code.append_value(&buf);

            let (industry_name, _, word, multiplier) = INDUSTRIES[self.industry.sample(rng)];
            buf.clear();
            buf.push_str("北京");
            buf.push_str(pick(rng, &TRADE_CHARS));
            buf.push_str(pick(rng, &TRADE_CHARS));
            buf.push_str(word);
            buf.push_str("有限公司");
            name.append_value(&buf);
            industry.append_value(industry_name);
            district.append_value(DISTRICTS[enterprise_district(index)].0);

            let raw = log_normal(rng, 1_000_000.0 * multiplier, 1.2);
            let rounded = (raw / 10_000.0).round().clamp(1.0, 1_000_000.0) * 10_000.0;
            capital.append_value(rounded as i64);

            let age: f64 = rng.sample::<f64, _>(Exp1) * 9.0;
            founded.append_value((FOUNDED_LAST - age as i64).max(FOUNDED_FIRST));
        }
        batch(
            &self.schema,
            vec![
                Arc::new(credit_code.finish()),
                Arc::new(name.finish()),
                Arc::new(industry.finish()),
                Arc::new(district.finish()),
                Arc::new(capital.finish()),
                Arc::new(founded.finish()),
            ],
        )
    }
}

/// Which per-enterprise series a [`Panel`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Series {
    /// `tax_records`: up to 6 years ending 2024.
    Tax,
    /// `utility_usage`: up to 12 months of 2024 ending December.
    Utility,
}

impl Series {
    pub(crate) fn max_per_unit(self) -> u64 {
        match self {
            Series::Tax => 6,
            Series::Utility => 12,
        }
    }
}

pub(crate) const TAX_FIRST_YEAR: i64 = 2019;
const SEASONAL: [f64; 12] = [
    1.25, 1.10, 0.95, 0.90, 0.95, 1.15, 1.35, 1.35, 1.05, 0.90, 1.00, 1.20,
];

/// A series per enterprise, enterprises visited in index order, each with a
/// run of consecutive periods ending at the last period. Run lengths are
/// random but raised when needed so that exactly `rows` rows fit into
/// `units` enterprises (the caller checks `rows <= units * max_per_unit`).
pub(crate) struct Panel {
    rng: ChaCha8Rng,
    schema: SchemaRef,
    series: Series,
    units: u64,
    rows: u64,
    emitted: u64,
    next_unit: u64,
    current_unit: u64,
    left: u64,
    period: u64,
    scale: f64,
    run_length: Weighted<12>,
}

impl Panel {
    pub(crate) fn new(seed: u64, schema: SchemaRef, series: Series, rows: u64, units: u64) -> Self {
        let run_length = match series {
            Series::Tax => [0.08, 0.08, 0.12, 0.14, 0.18, 0.40, 0., 0., 0., 0., 0., 0.],
            Series::Utility => {
                let mut w = [0.3 / 11.0; 12];
                w[11] = 0.7;
                w
            }
        };
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            schema,
            series,
            units,
            rows,
            emitted: 0,
            next_unit: 0,
            current_unit: 0,
            left: 0,
            period: 0,
            scale: 0.0,
            run_length: Weighted::new(run_length),
        }
    }

    fn start_unit(&mut self) {
        let max = self.series.max_per_unit();
        let remaining_rows = self.rows - self.emitted;
        self.current_unit = self.next_unit;
        self.next_unit += 1;
        let units_after = self.units.saturating_sub(self.next_unit);
        let drawn = self.run_length.sample(&mut self.rng) as u64 + 1;
        let needed = remaining_rows.saturating_sub(units_after.saturating_mul(max));
        let length = drawn.max(needed).min(remaining_rows).min(max);
        self.left = length;
        self.period = max - length;
        self.scale = match self.series {
            Series::Tax => log_normal(&mut self.rng, 80_000.0, 1.4),
            Series::Utility => log_normal(&mut self.rng, 4_000.0, 1.3),
        };
    }
}

impl BatchSource for Panel {
    fn next_batch(&mut self, n: usize) -> Result<RecordBatch, ArrowError> {
        let mut credit_code = StringBuilder::with_capacity(n, n * 18);
        let mut period_col_int = Int64Builder::with_capacity(n);
        let mut period_col_str = StringBuilder::with_capacity(n, n * 7);
        let mut value = Int64Builder::with_capacity(n);
        let mut buf = String::with_capacity(32);
        for _ in 0..n {
            if self.left == 0 {
                self.start_unit();
            }
            buf.clear();
            push_credit_code(&mut buf, self.current_unit);
            credit_code.append_value(&buf);
            let rng = &mut self.rng;
            match self.series {
                Series::Tax => {
                    period_col_int.append_value(TAX_FIRST_YEAR + self.period as i64);
                    let paid = if rng.random_bool(0.08) {
                        0.0
                    } else {
                        let growth = 1.0 + 0.05 * self.period as f64;
                        self.scale * growth * (0.25 * normal(rng)).exp()
                    };
                    value.append_value(paid.round() as i64);
                }
                Series::Utility => {
                    buf.clear();
                    buf.push_str("2024-");
                    push_padded(&mut buf, self.period + 1, 2);
                    period_col_str.append_value(&buf);
                    let kwh =
                        self.scale * SEASONAL[self.period as usize] * (0.1 * normal(rng)).exp();
                    value.append_value(kwh.round().max(0.0) as i64);
                }
            }
            self.period += 1;
            self.left -= 1;
            self.emitted += 1;
        }
        let period: ArrayRef = match self.series {
            Series::Tax => Arc::new(period_col_int.finish()),
            Series::Utility => Arc::new(period_col_str.finish()),
        };
        batch(
            &self.schema,
            vec![
                Arc::new(credit_code.finish()),
                period,
                Arc::new(value.finish()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_padded_pads_and_keeps_long_values() {
        let mut s = String::new();
        push_padded(&mut s, 7, 3);
        push_padded(&mut s, 0, 2);
        push_padded(&mut s, 12345, 2);
        assert_eq!(s, "0070012345");
    }
}
