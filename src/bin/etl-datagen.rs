//! etl-datagen: writes CSV files in the seed's format (account_assets.csv, trades.csv) with
//! labelled invalid rows, plus expected.json (counts by file and reason) and invalid_rows.csv;
//! or, with --days, a date-partitioned layout of file sets (assets/DATE.csv, trades/DATE/part-N.csv,
//! plain, gzip or zstd). Deterministic for a seed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: etl-datagen --out DIR [--assets N] [--trades N] [--invalid-rate R] [--seed S]
                   [--days N [--start YYYY-MM-DD] [--files-per-day M] [--gzip] [--zstd]]

Writes DIR/account_assets.csv, DIR/trades.csv, DIR/expected.json and DIR/invalid_rows.csv.
Defaults: --assets 1000 --trades 10000 --invalid-rate 0.02 --seed 42.

With --days N: one business date after another from --start (default 2025-12-22), each with
DIR/assets/DATE.csv and its trades in M parts DIR/trades/DATE/part-0001.csv ... (--files-per-day,
default 1), the layout specs/daily.yaml reads; every file compressed with --gzip (.csv.gz) or
--zstd (.csv.zst), or, with both, the two in turn. Each date has its own seed (S + day), its
trades are of that date, and --assets/--trades are per date. DIR/expected.json then gives the
counts per date and per file, and DIR/invalid_rows.csv names each invalid row's file (its path
under DIR) and its line in that file (the text as decompressed).";

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

/// 2025-12-22, the seed's day, in days since 1970-01-01.
const SEED_DAY: i64 = 20444;

/// Seconds before 15:00:00 of `day` (days since 1970-01-01) as an ISO timestamp.
fn timestamp(day: i64, back_s: i64) -> String {
    let t = day * 86400 + 15 * 3600 - back_s;
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

/// (year, month, day) to days since 1970-01-01 (the inverse of `civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `YYYY-MM-DD` date in days since 1970-01-01.
fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    let days = days_from_civil(y, m, d);
    (s.len() == 10 && civil(days) == (y, m, d)).then_some(days)
}

fn date_text(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

struct Args {
    out: PathBuf,
    assets: usize,
    trades: usize,
    rate: f64,
    seed: u64,
    /// With --days: how many dates, from which, in how many trade files, compressed how.
    days: Option<usize>,
    start: i64,
    files_per_day: usize,
    gzip: bool,
    zstd: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { out: PathBuf::new(), assets: 1000, trades: 10_000, rate: 0.02, seed: 42, days: None, start: SEED_DAY, files_per_day: 1, gzip: false, zstd: false };
    let mut it = std::env::args().skip(1);
    let mut out = None;
    let mut layout_flag = None;
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--help" | "-h" => return Err(String::new()),
            "--gzip" => {
                a.gzip = true;
                layout_flag = Some("--gzip");
                continue;
            }
            "--zstd" => {
                a.zstd = true;
                layout_flag = Some("--zstd");
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = format!("{flag}: `{value}` is not a valid value");
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(&value)),
            "--assets" => a.assets = value.parse().map_err(|_| bad.clone())?,
            "--trades" => a.trades = value.parse().map_err(|_| bad.clone())?,
            "--invalid-rate" => a.rate = value.parse().map_err(|_| bad.clone())?,
            "--seed" => a.seed = value.parse().map_err(|_| bad.clone())?,
            "--days" => a.days = Some(value.parse().ok().filter(|d| *d > 0).ok_or_else(|| format!("{flag}: `{value}` is not a number of days (1 or more)"))?),
            "--start" => {
                a.start = parse_date(&value).ok_or_else(|| format!("{flag}: `{value}` is not a date; write YYYY-MM-DD"))?;
                layout_flag = Some("--start");
            }
            "--files-per-day" => {
                a.files_per_day = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{flag}: `{value}` is not a number of files (1 or more)"))?;
                layout_flag = Some("--files-per-day");
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if let (None, Some(f)) = (a.days, layout_flag) {
        return Err(format!("{f} shapes the daily layout: add --days N"));
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

/// An invalid row: which of the two files, its line there, why, the field and its value.
struct Label {
    file: &'static str,
    line: usize,
    reason: &'static str,
    field: String,
    value: String,
}

struct Labels {
    rows: Vec<Label>,
}

impl Labels {
    fn add(&mut self, file: &'static str, line: usize, reason: &'static str, field: &str, value: &str) {
        self.rows.push(Label { file, line, reason, field: field.to_string(), value: value.to_string() });
    }
}

/// The trades file's header line.
const TRADES_HEADER: &str = "id,account_id,account_type,traded_id,stock_code,traded_time,traded_price,traded_volume,traded_amount,strategy_name,order_remark,direction,offset_flag,created_at,updated_at\n";

/// One day's files as text: the assets, the trades' header line, the labels (each trade line is
/// handed to `day_files`' `emit` as it is made, so a day of 100M trades is never held whole).
struct DayFiles {
    assets: String,
    trades_header: String,
    labels: Labels,
}

/// A file's counts for expected.json.
struct Counts {
    rows: usize,
    by_reason: BTreeMap<&'static str, usize>,
}

impl Counts {
    fn json(&self, indent: &str) -> String {
        let invalid: usize = self.by_reason.values().sum();
        let reasons: Vec<String> = self.by_reason.iter().map(|(k, v)| format!("{indent}    \"{k}\": {v}")).collect();
        format!(
            "{{\n{indent}  \"rows\": {},\n{indent}  \"valid\": {},\n{indent}  \"invalid\": {invalid},\n{indent}  \"by_reason\": {{\n{}\n{indent}  }}\n{indent}}}",
            self.rows,
            self.rows - invalid,
            reasons.join(",\n")
        )
    }
}

fn label_row(file: &str, l: &Label) -> String {
    format!("{file},{},{},{},\"{}\"\n", l.line, l.reason, l.field, l.value.replace('"', "\"\""))
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
    match a.days {
        None => flat(a),
        Some(days) => daily(a, days),
    }
}

/// The seed's two files in DIR.
fn flat(a: &Args) -> std::io::Result<()> {
    // The trades go to their file as they are made.
    let mut w = BufWriter::new(File::create(a.out.join("trades.csv"))?);
    w.write_all(TRADES_HEADER.as_bytes())?;
    let mut failed: Option<std::io::Error> = None;
    let day = day_files(a, a.seed, SEED_DAY, 48 * 3600, None, &mut |line: &str| {
        if failed.is_none()
            && let Err(e) = w.write_all(line.as_bytes())
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    w.flush()?;
    std::fs::write(a.out.join("account_assets.csv"), &day.assets)?;
    let mut w = BufWriter::new(File::create(a.out.join("invalid_rows.csv"))?);
    writeln!(w, "file,line,reason,field,value")?;
    for l in &day.labels.rows {
        w.write_all(label_row(l.file, l).as_bytes())?;
    }
    w.flush()?;
    let counts = |file: &'static str, rows: usize| {
        let mut by_reason = BTreeMap::new();
        for l in day.labels.rows.iter().filter(|l| l.file == file) {
            *by_reason.entry(l.reason).or_default() += 1;
        }
        format!("  \"{file}\": {}", Counts { rows, by_reason }.json("  "))
    };
    let json = format!(
        "{{\n  \"seed\": {},\n  \"invalid_rate\": {},\n{},\n{}\n}}\n",
        a.seed,
        a.rate,
        counts("account_assets.csv", a.assets),
        counts("trades.csv", a.trades)
    );
    std::fs::write(a.out.join("expected.json"), json)
}

/// A compression for the n-th file written: none, gzip, zstd, or the two in turn.
fn compression(a: &Args, n: usize) -> &'static str {
    match (a.gzip, a.zstd) {
        (false, false) => "",
        (true, false) => ".gz",
        (false, true) => ".zst",
        (true, true) => [".gz", ".zst"][n % 2],
    }
}

fn write_packed(path: &std::path::Path, text: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.to_string_lossy();
    let file = BufWriter::new(File::create(path)?);
    if name.ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        enc.write_all(text)?;
        enc.finish()?.flush()
    } else if name.ends_with(".zst") {
        let mut enc = zstd::Encoder::new(file, 3)?;
        enc.write_all(text)?;
        enc.finish()?.flush()
    } else {
        let mut file = file;
        file.write_all(text)?;
        file.flush()
    }
}

/// --days: each date's assets file and trade parts, and the counts and labels of every file.
fn daily(a: &Args, days: usize) -> std::io::Result<()> {
    let mut labels = BufWriter::new(File::create(a.out.join("invalid_rows.csv"))?);
    writeln!(labels, "file,line,reason,field,value")?;
    let mut dates_json = Vec::new();
    let mut written = 0;
    for d in 0..days {
        let day = a.start + d as i64;
        let date = date_text(day);
        // Trades within the 8 hours before 15:00 of their date: every trade is of its date.
        let mut trades: Vec<String> = Vec::with_capacity(a.trades);
        let files = day_files(a, a.seed + d as u64, day, 8 * 3600, Some(&date), &mut |line: &str| trades.push(line.to_string()));
        let mut per_file: Vec<(String, Counts)> = Vec::new();
        let assets = format!("assets/{date}.csv{}", compression(a, written));
        written += 1;
        write_packed(&a.out.join(&assets), files.assets.as_bytes())?;
        let mut by_reason = BTreeMap::new();
        for l in files.labels.rows.iter().filter(|l| l.file == "account_assets.csv") {
            labels.write_all(label_row(&assets, l).as_bytes())?;
            *by_reason.entry(l.reason).or_default() += 1;
        }
        per_file.push((assets, Counts { rows: a.assets, by_reason }));
        // The trades in `files_per_day` parts of (nearly) equal size, each with the header; a
        // trade's label moves to its part and its line there.
        let per = trades.len().div_ceil(a.files_per_day).max(1);
        let trade_labels: BTreeMap<usize, &Label> = files.labels.rows.iter().filter(|l| l.file == "trades.csv").map(|l| (l.line, l)).collect();
        for p in 0..a.files_per_day {
            let chunk = trades.get(p * per..((p + 1) * per).min(trades.len())).unwrap_or_default();
            let key = format!("trades/{date}/part-{:04}.csv{}", p + 1, compression(a, written));
            written += 1;
            let mut text = files.trades_header.clone();
            let mut by_reason = BTreeMap::new();
            for (j, line) in chunk.iter().enumerate() {
                text.push_str(line);
                if let Some(l) = trade_labels.get(&(p * per + j + 2)) {
                    labels.write_all(label_row(&key, &Label { line: j + 2, field: l.field.clone(), value: l.value.clone(), ..**l }).as_bytes())?;
                    *by_reason.entry(l.reason).or_default() += 1;
                }
            }
            write_packed(&a.out.join(&key), text.as_bytes())?;
            per_file.push((key, Counts { rows: chunk.len(), by_reason }));
        }
        let total = |pick: &dyn Fn(&str) -> bool| -> Counts {
            let mut c = Counts { rows: 0, by_reason: BTreeMap::new() };
            for (_, f) in per_file.iter().filter(|(k, _)| pick(k)) {
                c.rows += f.rows;
                for (r, n) in &f.by_reason {
                    *c.by_reason.entry(r).or_default() += n;
                }
            }
            c
        };
        let assets_total = total(&|k| k.starts_with("assets/"));
        let trades_total = total(&|k| k.starts_with("trades/"));
        let files_json: Vec<String> = per_file.iter().map(|(k, c)| format!("        \"{k}\": {}", c.json("        "))).collect();
        dates_json.push(format!(
            "    \"{date}\": {{\n      \"seed\": {},\n      \"assets\": {},\n      \"trades\": {},\n      \"files\": {{\n{}\n      }}\n    }}",
            a.seed + d as u64,
            assets_total.json("      "),
            trades_total.json("      "),
            files_json.join(",\n")
        ));
    }
    labels.flush()?;
    let json = format!(
        "{{\n  \"seed\": {},\n  \"invalid_rate\": {},\n  \"files_per_day\": {},\n  \"dates\": {{\n{}\n  }}\n}}\n",
        a.seed,
        a.rate,
        a.files_per_day,
        dates_json.join(",\n")
    );
    std::fs::write(a.out.join("expected.json"), json)
}

/// One day's rows: `day` is the date the timestamps end at (15:00), trades reach back `span`
/// seconds before it; `date`, when given, names the trades (`T<date><seq>`), else each trade's own
/// day does (the seed's way).
fn day_files(a: &Args, seed: u64, day: i64, span: i64, date: Option<&str>, emit: &mut dyn FnMut(&str)) -> DayFiles {
    use std::fmt::Write as _;
    let mut rng = Rng(seed);
    let mut labels = Labels { rows: Vec::new() };

    // Assets. Line numbers count the header as line 1.
    let bad_assets = pick_invalid(&mut rng, a.assets, a.rate, &ASSET_REASONS);
    let mut w = String::new();
    let _ = writeln!(w, "id,account_id,account_type,cash,frozen_cash,market_value,total_asset,updated_at");
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
        let mut updated = timestamp(day, rng.range(0, 3600));
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
        let _ = writeln!(w, "{},{account_id},{type_s},{cash_s},{},{},{},{updated}", i + 1, money(frozen), money(mv), money(total));
    }
    let assets = w;

    // Trades reference valid accounts only (unknown_fk rows excepted).
    let bad_trades = pick_invalid(&mut rng, a.trades.max(1), if a.trades == 0 { 0.0 } else { a.rate }, &TRADE_REASONS);
    let trades_header = TRADES_HEADER.to_string();
    // Each valid trade's id as its day and number (`T<day><seq:06>`), to repeat one for a
    // duplicate_key row: 8 bytes a trade, not a string.
    let mut valid_ids: Vec<(u32, u32)> = Vec::new();
    let mut per_day: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..a.trades {
        let line = i + 2;
        let (account_id, account_type) = valid_accounts[(rng.next() % valid_accounts.len() as u64) as usize].clone();
        let mut account_id = account_id;
        let type_s = account_type.to_string();
        let back = rng.range(0, span);
        let mut traded_time = timestamp(day, back);
        let id_day = date.map_or_else(|| traded_time[..10].replace('-', ""), |d| d.replace('-', ""));
        let seq = per_day.entry(id_day.clone()).or_insert(0);
        *seq += 1;
        let mut traded_id = format!("T{id_day}{seq:06}");
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
        let updated = timestamp(day, rng.range(0, 3600));
        match bad_trades.get(&i).copied().filter(|_| a.trades > 0) {
            None => valid_ids.push((id_day.parse().unwrap_or(0), *seq)),
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
                    let (d, n) = valid_ids[(rng.next() % valid_ids.len() as u64) as usize];
                    traded_id = format!("T{d}{n:06}");
                    labels.add("trades.csv", line, "duplicate_key", "traded_id", &traded_id);
                }
            },
        }
        emit(&format!(
            "{},{account_id},{type_s},{traded_id},{stock},{traded_time},{price_s},{volume},{},{strategy},{remark},{direction},{offset},{created},{updated}\n",
            i + 1,
            money(amount)
        ));
    }
    DayFiles { assets, trades_header, labels }
}
