//! etl-datagen: writes CSV files in the seed's format (account_assets.csv, trades.csv) with
//! labelled invalid rows, plus expected.json (counts by file and reason) and invalid_rows.csv.
//! Deterministic for a seed; standard library only, so it builds in seconds.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: etl-datagen --out DIR [--assets N] [--trades N] [--invalid-rate R] [--seed S]

Writes DIR/account_assets.csv, DIR/trades.csv, DIR/expected.json and DIR/invalid_rows.csv.
Defaults: --assets 1000 --trades 10000 --invalid-rate 0.02 --seed 42.";

const ASSET_REASONS: [&str; 6] = ["bad_enum", "negative_money", "formula_mismatch", "empty_required", "bad_timestamp", "duplicate_key"];
const TRADE_REASONS: [&str; 7] =
    ["bad_enum", "negative_money", "formula_mismatch", "empty_required", "bad_timestamp", "duplicate_key", "unknown_fk"];
const STRATEGIES: [&str; 5] = ["趋势跟踪", "均值回归", "高频做市", "统计套利", "多因子选股"];
const REMARKS: [&str; 4] = ["", "止盈", "止损", "调仓"];

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Cents as a decimal text with two places.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// Seconds before 2025-12-22T15:00:00 as an ISO timestamp.
fn timestamp(back_s: i64) -> String {
    // 2025-12-22 is day 20444 since 1970-01-01.
    let t = 20444 * 86400 + 15 * 3600 - back_s;
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

struct Args {
    out: PathBuf,
    assets: usize,
    trades: usize,
    rate: f64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { out: PathBuf::new(), assets: 1000, trades: 10_000, rate: 0.02, seed: 42 };
    let mut it = std::env::args().skip(1);
    let mut out = None;
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = format!("{flag}: `{value}` is not a valid value");
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(&value)),
            "--assets" => a.assets = value.parse().map_err(|_| bad.clone())?,
            "--trades" => a.trades = value.parse().map_err(|_| bad.clone())?,
            "--invalid-rate" => a.rate = value.parse().map_err(|_| bad.clone())?,
            "--seed" => a.seed = value.parse().map_err(|_| bad.clone())?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    a.out = out.ok_or("--out is required")?;
    if !(0.0..=0.5).contains(&a.rate) {
        return Err("--invalid-rate must be between 0 and 0.5".into());
    }
    if a.assets == 0 {
        return Err("--assets must be at least 1".into());
    }
    Ok(a)
}

/// Picks round(rate × n) distinct rows and gives each a reason, round robin. A duplicate needs
/// an earlier valid row, so row 0 never gets one.
fn pick_invalid(rng: &mut Rng, n: usize, rate: f64, reasons: &[&'static str]) -> BTreeMap<usize, &'static str> {
    let count = ((rate * n as f64).round() as usize).min(n.saturating_sub(1));
    let mut out = BTreeMap::new();
    let mut i = 0;
    while out.len() < count {
        let pos = 1 + (rng.next() % (n as u64 - 1)) as usize;
        if out.contains_key(&pos) {
            continue;
        }
        out.insert(pos, reasons[i % reasons.len()]);
        i += 1;
    }
    out
}

struct Labels {
    rows: Vec<String>,
    counts: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
}

impl Labels {
    fn add(&mut self, file: &'static str, line: usize, reason: &'static str, field: &str, value: &str) {
        let value = value.replace('"', "\"\"");
        self.rows.push(format!("{file},{line},{reason},{field},\"{value}\"\n"));
        *self.counts.entry(file).or_default().entry(reason).or_default() += 1;
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("etl-datagen: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    match generate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etl-datagen: cannot write to {}: {e}", args.out.display());
            ExitCode::from(1)
        }
    }
}

fn generate(a: &Args) -> std::io::Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let mut rng = Rng(a.seed);
    let mut labels = Labels { rows: Vec::new(), counts: BTreeMap::new() };

    // Assets. Line numbers count the header as line 1.
    let bad_assets = pick_invalid(&mut rng, a.assets, a.rate, &ASSET_REASONS);
    let mut w = BufWriter::new(File::create(a.out.join("account_assets.csv"))?);
    writeln!(w, "id,account_id,account_type,cash,frozen_cash,market_value,total_asset,updated_at")?;
    let mut valid_accounts: Vec<(String, u32)> = Vec::new();
    for i in 0..a.assets {
        let line = i + 2;
        let mut account_id = format!("1000{:07}", i + 1);
        let mut account_type = *rng.pick(&[2, 2, 2, 3, 1]);
        let cash = rng.range(1_000_000, 100_000_000);
        let mut frozen = rng.range(0, cash * 3 / 10);
        let mv = rng.range(0, cash * 2);
        let mut total = cash + frozen + mv;
        let mut cash_s = money(cash);
        let mut updated = timestamp(rng.range(0, 3600));
        let mut type_s = account_type.to_string();
        match bad_assets.get(&i).copied() {
            None => valid_accounts.push((account_id.clone(), account_type)),
            Some(reason) => match reason {
                "bad_enum" => {
                    account_type = *rng.pick(&[4, 8, 9, 10, 12, 99]);
                    type_s = account_type.to_string();
                    labels.add("account_assets.csv", line, reason, "account_type", &type_s);
                }
                "negative_money" => {
                    frozen = -rng.range(1, 100_000);
                    total = cash + frozen + mv;
                    labels.add("account_assets.csv", line, reason, "frozen_cash", &money(frozen));
                }
                "formula_mismatch" => {
                    let off = rng.range(2, 100) * if rng.next().is_multiple_of(2) { 1 } else { -1 };
                    total += off;
                    labels.add("account_assets.csv", line, reason, "total_asset", &money(total));
                }
                "empty_required" => {
                    cash_s = String::new();
                    total = frozen + mv;
                    labels.add("account_assets.csv", line, reason, "cash", "");
                }
                "bad_timestamp" => {
                    updated = rng.pick(&["2025-13-45T25:61:00", "yesterday", "2025-02-30T10:00:00"]).to_string();
                    labels.add("account_assets.csv", line, reason, "updated_at", &updated);
                }
                _ => {
                    // duplicate_key: repeat an earlier valid account.
                    let (id, ty) = valid_accounts[(rng.next() % valid_accounts.len() as u64) as usize].clone();
                    account_id = id;
                    type_s = ty.to_string();
                    labels.add("account_assets.csv", line, "duplicate_key", "account_id", &account_id);
                }
            },
        }
        writeln!(w, "{},{account_id},{type_s},{cash_s},{},{},{},{updated}", i + 1, money(frozen), money(mv), money(total))?;
    }
    w.flush()?;

    // Trades reference valid accounts only (unknown_fk rows excepted).
    let bad_trades = pick_invalid(&mut rng, a.trades.max(1), if a.trades == 0 { 0.0 } else { a.rate }, &TRADE_REASONS);
    let mut w = BufWriter::new(File::create(a.out.join("trades.csv"))?);
    writeln!(
        w,
        "id,account_id,account_type,traded_id,stock_code,traded_time,traded_price,traded_volume,traded_amount,strategy_name,order_remark,direction,offset_flag,created_at,updated_at"
    )?;
    let mut valid_ids: Vec<String> = Vec::new();
    let mut per_day: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..a.trades {
        let line = i + 2;
        let (account_id, account_type) = valid_accounts[(rng.next() % valid_accounts.len() as u64) as usize].clone();
        let mut account_id = account_id;
        let type_s = account_type.to_string();
        let back = rng.range(0, 48 * 3600);
        let mut traded_time = timestamp(back);
        let day = traded_time[..10].replace('-', "");
        let seq = per_day.entry(day.clone()).or_insert(0);
        *seq += 1;
        let mut traded_id = format!("T{day}{seq:06}");
        let stock = format!("{}{:03}", rng.pick(&["600", "601", "603", "000", "002", "300"]), rng.range(0, 999));
        let price = rng.range(500, 20_000);
        let volume = rng.range(1, 50) * 100;
        let mut amount = price * volume;
        let mut price_s = money(price);
        let mut strategy = rng.pick(&STRATEGIES).to_string();
        let remark = rng.pick(&REMARKS).to_string();
        let mut direction = "0".to_string();
        let mut offset = rng.pick(&["48", "49"]).to_string();
        let created = traded_time.clone();
        let updated = timestamp(rng.range(0, 3600));
        match bad_trades.get(&i).copied().filter(|_| a.trades > 0) {
            None => valid_ids.push(traded_id.clone()),
            Some(reason) => match reason {
                "bad_enum" => {
                    offset = rng.pick(&["47", "55", "60"]).to_string();
                    labels.add("trades.csv", line, reason, "offset_flag", &offset);
                }
                "negative_money" => {
                    price_s = money(-price);
                    amount = -price * volume;
                    labels.add("trades.csv", line, reason, "traded_price", &price_s);
                }
                "formula_mismatch" => {
                    amount += rng.range(2, 100) * if rng.next().is_multiple_of(2) { 1 } else { -1 };
                    labels.add("trades.csv", line, reason, "traded_amount", &money(amount));
                }
                "empty_required" => {
                    strategy = String::new();
                    labels.add("trades.csv", line, reason, "strategy_name", "");
                }
                "bad_timestamp" => {
                    traded_time = "2025-12-32T09:30:00".to_string();
                    labels.add("trades.csv", line, reason, "traded_time", &traded_time);
                }
                "unknown_fk" => {
                    account_id = format!("9999{:07}", rng.range(0, 9_999_999));
                    labels.add("trades.csv", line, reason, "account_id", &account_id);
                }
                _ if valid_ids.is_empty() => {
                    direction = "50".to_string();
                    labels.add("trades.csv", line, "bad_enum", "direction", &direction);
                }
                _ => {
                    traded_id = valid_ids[(rng.next() % valid_ids.len() as u64) as usize].clone();
                    labels.add("trades.csv", line, "duplicate_key", "traded_id", &traded_id);
                }
            },
        }
        writeln!(
            w,
            "{},{account_id},{type_s},{traded_id},{stock},{traded_time},{price_s},{volume},{},{strategy},{remark},{direction},{offset},{created},{updated}",
            i + 1,
            money(amount)
        )?;
    }
    w.flush()?;

    let mut w = BufWriter::new(File::create(a.out.join("invalid_rows.csv"))?);
    writeln!(w, "file,line,reason,field,value")?;
    for r in &labels.rows {
        w.write_all(r.as_bytes())?;
    }
    w.flush()?;

    let section = |file: &'static str, rows: usize| {
        let by: BTreeMap<&str, usize> = labels.counts.get(file).cloned().unwrap_or_default();
        let invalid: usize = by.values().sum();
        let reasons: Vec<String> = by.iter().map(|(k, v)| format!("      \"{k}\": {v}")).collect();
        format!(
            "  \"{file}\": {{\n    \"rows\": {rows},\n    \"valid\": {},\n    \"invalid\": {invalid},\n    \"by_reason\": {{\n{}\n    }}\n  }}",
            rows - invalid,
            reasons.join(",\n")
        )
    };
    let json = format!(
        "{{\n  \"seed\": {},\n  \"invalid_rate\": {},\n{},\n{}\n}}\n",
        a.seed,
        a.rate,
        section("account_assets.csv", a.assets),
        section("trades.csv", a.trades)
    );
    std::fs::write(a.out.join("expected.json"), json)
}
