//! `etl report`: the HTML page of a run holds that run's numbers (asserted in the page), draws its
//! charts as inline SVG, fetches nothing, and renders in a real headless Chromium (Debian's
//! package, installed by scripts/install-deps.sh) without a console message, to a screenshot that
//! is not blank; the screenshot is kept under the target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::TestDb;
use crate::util::etl;

/// A spec loading `accounts.csv` of `dir` into the test's schema, its run records there too.
fn spec(db: &TestDb, dir: &Path) -> PathBuf {
    let url = format!("{}?options=-c%20search_path%3D{}", db.url, db.schema);
    let text = format!(
        "version: 1
name: report_test
connections:
  files: {{ type: local, path: '{dir}' }}
  db: {{ type: postgres, url: '{url}', schema: {schema} }}
stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      region: {{ type: string, max_length: 4 }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
    checks:
      - {{ name: enough_rows, row_count: {{ min: 2 }} }}
",
        dir = dir.display(),
        schema = db.schema
    );
    let path = dir.join("report.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Chromium from Debian's package (scripts/install-deps.sh installs it).
fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("chromium is not installed: run scripts/install-deps.sh"))
}

/// What a headless Chromium made of a page: its console messages (and failed loads) as logged,
/// the DOM after rendering, and a screenshot at `png`.
struct Rendered {
    console: Vec<String>,
    dom: String,
    log: String,
}

fn render(page: &Path, png: &Path) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let base = |cmd: &mut Command| {
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut shot = Command::new(chromium());
    base(&mut shot);
    let out = shot.args(["--window-size=1200,2200", &format!("--screenshot={}", png.display()), &url]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && png.is_file(), "chromium made no screenshot\n{log}");
    let mut dump = Command::new(chromium());
    base(&mut dump);
    let out = dump.args(["--dump-dom", &url]).output().unwrap();
    let log = format!("{log}{}", String::from_utf8_lossy(&out.stderr));
    // Chromium logs each console message (a script's, or a resource that failed to load) as
    // `...:CONSOLE(line)] "message", source: URL (line)`.
    let console = log.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect();
    Rendered { console, dom: String::from_utf8_lossy(&out.stdout).into_owned(), log }
}

/// The share of a PNG's pixels that are not white.
fn inked(png: &Path) -> f64 {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let inked = pixels.chunks(channels).filter(|p| p.iter().take(3).any(|c| *c < 200)).count();
    inked as f64 / (pixels.len() / channels) as f64
}

#[test]
fn a_runs_report_shows_its_numbers_and_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("report");
    let spec = spec(&db, dir.path());
    let spec = spec.to_str().unwrap();
    let csv = dir.path().join("accounts.csv");
    // Day 1: 3 rows, 1 rejected (cash under 0).
    std::fs::write(&csv, "account_id,region,cash\nA,EU,1.00\nB,EU,-1.00\nC,US,2.00\n").unwrap();
    etl(&["run", spec, "--date", "2026-12-01"], &[]).expect_code(4);
    let first = db.count(&format!("SELECT max(run_id) FROM {}.etl_runs", db.schema));
    // Day 2: 5 rows, 3 rejected: a cash under 0, a cash that is no decimal, a region too long.
    std::fs::write(&csv, "account_id,region,cash\nA,EU,1.00\nB,EU,-2.00\nC,US,2.50\nD,ASIA1,3.00\nE,US,abc\n").unwrap();
    let out = etl(&["run", spec, "--date", "2026-12-02"], &[]);
    out.expect_code(4);
    let second = db.count(&format!("SELECT max(run_id) FROM {}.etl_runs", db.schema));

    let page = dir.path().join("report.html");
    let out = etl(&["report", spec, "--out", page.to_str().unwrap()], &[]);
    out.expect_code(0);
    assert!(out.stderr.contains(&format!("run {second} of spec report_test (rejected)")), "{}", out.evidence());
    let html = std::fs::read_to_string(&page).unwrap();
    let has = |needle: &str| assert!(html.contains(needle), "the page lacks {needle:?}\n{}", out.evidence());
    has(&format!("Run {second} of spec <code>report_test</code>"));
    has("business date 2026-12-02");
    has(r#"id="run-status">rejected<"#);
    has(r#"id="rows-read">5<"#);
    has(r#"id="rows-rejected">3<"#);
    // The stage's row as the records hold it: read 5, valid 2 (A unchanged, C updated), rejected
    // 3, warned 0.
    let row = db.texts(&format!(
        "SELECT concat_ws(',', rows_read, rows_read - rows_rejected, rows_rejected, rows_inserted, rows_updated, rows_unchanged) FROM {}.etl_run_stages WHERE run_id = {second}",
        db.schema
    ));
    let [read, valid, rejected, inserted, updated, unchanged] = row[0].split(',').collect::<Vec<_>>()[..] else { panic!("{row:?}") };
    assert_eq!((read, valid, rejected, inserted, updated, unchanged), ("5", "2", "3", "0", "1", "1"));
    // The stage's duration is its own (from its start to its record), not zero.
    let seconds = db.texts(&format!("SELECT round(extract(epoch FROM finished_at - started_at), 2)::text FROM {}.etl_run_stages WHERE run_id = {second}", db.schema));
    assert!(seconds[0].parse::<f64>().unwrap() > 0.0, "{seconds:?}");
    has(&format!(r#"<td class="n">{}</td><td></td></tr>"#, seconds[0]));
    has(&format!(
        r#"<td class="n">{read}</td><td class="n">{valid}</td><td class="n">{rejected}</td><td class="n">0</td><td class="n">{inserted}</td><td class="n">{updated}</td><td class="n">{unchanged}</td>"#
    ));
    // Its rejects by rule and by column, drawn as SVG bars with their counts.
    let by_rule = section(&html, "chart-by-rule");
    let text = |svg: &str| regex::Regex::new(r">\s*([^<]*?)\s*<").unwrap().captures_iter(svg).map(|c| c[1].to_string()).filter(|t| !t.is_empty()).collect::<Vec<_>>();
    let (rules, columns) = (text(by_rule), text(section(&html, "chart-by-column")));
    for label in ["min", "type", "max_length", "1 row"] {
        assert!(rules.iter().any(|t| t == label), "{label} not in the rules' chart: {rules:?}");
    }
    for label in ["cash", "region", "2 values", "1 value"] {
        assert!(columns.iter().any(|t| t == label), "{label} not in the columns' chart: {columns:?}");
    }
    // The contract, and both runs over time.
    has("enough_rows");
    for chart in ["chart-read", "chart-rejected", "chart-seconds"] {
        let svg = section(&html, chart);
        assert!(svg.contains("<svg") && svg.contains("<polyline"), "{chart} has no line:\n{svg}");
        assert!(svg.contains(&format!("#{first} 2026-12-01")) && svg.contains(&format!("#{second} 2026-12-02")), "{chart} lacks a run:\n{svg}");
    }
    // Self-contained: no script, nothing fetched.
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("url("), "the page loads something:\n{html}");
    assert!(!regex::Regex::new(r#"(href|xlink:href)="https?:"#).unwrap().is_match(&html));

    // In a real browser: no console message, the numbers in the rendered DOM, a screenshot with ink.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("report.png");
    let _ = std::fs::remove_file(&png);
    let shown = render(&page, &png);
    assert!(shown.console.is_empty(), "console messages:\n{}\n{}", shown.console.join("\n"), shown.log);
    assert!(shown.dom.contains(r#"id="rows-read">5<"#), "the rendered DOM lacks the run's rows:\n{}", shown.dom);
    let ink = inked(&png);
    assert!(ink > 0.02, "the screenshot {} is blank ({:.3}% inked)", png.display(), ink * 100.0);
    std::fs::copy(&page, artifacts.join("report.html")).unwrap();

    // The checks above can fail: a page with a console error and a missing image is caught, and
    // a white page has no ink.
    let bad = dir.path().join("bad.html");
    std::fs::write(&bad, "<!DOCTYPE html><html><body><script>console.error('broken')</script><img src=\"missing.png\"></body></html>").unwrap();
    let shown = render(&bad, &dir.path().join("bad.png"));
    assert!(!shown.console.is_empty(), "a console error went unseen:\n{}", shown.log);
    assert!(inked(&dir.path().join("bad.png")) < 0.001);

    // An earlier run, by its id; a run that is not there, with the way out.
    let out = etl(&["report", spec, "--run", &first.to_string(), "--out", "-"], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains(r#"id="rows-read">3<"#) && out.stdout.contains(r#"id="rows-rejected">1<"#), "{}", out.evidence());
    assert!(!out.stdout.contains("2026-12-02"), "a later run in an earlier run's report\n{}", out.stdout);
    let out = etl(&["report", spec, "--run", &(second + 1000).to_string(), "--out", "-"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains(&format!("has no run {}", second + 1000)) && out.stderr.contains(&format!("etl report --run {second}")), "{}", out.evidence());
}

/// The element with this id, up to the next chart or section.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no element {id}"));
    let rest = &html[start..];
    let end = rest.find("</svg>").map_or(rest.len(), |e| e + 6);
    &rest[..end]
}

/// The quick start's target is a DuckDB file: its runs are reported from the records in it.
#[test]
fn a_duckdb_targets_runs_are_reported_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("duck.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1
name: duck_report
connections:
  files: {{ type: local, path: '{}' }}
  out: {{ type: duckdb, path: warehouse.duckdb }}
stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: out, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
",
            dir.path().display()
        ),
    )
    .unwrap();
    let csv = dir.path().join("accounts.csv");
    std::fs::write(&csv, "account_id,cash\nA,1.00\nB,-1.00\n").unwrap();
    etl(&["run", spec.to_str().unwrap(), "--date", "2026-12-01"], &[]).expect_code(4);
    std::fs::write(&csv, "account_id,cash\nA,1.00\nB,-1.00\nC,x\nD,4.00\n").unwrap();
    etl(&["run", spec.to_str().unwrap(), "--date", "2026-12-02"], &[]).expect_code(4);
    let out = etl(&["report", spec.to_str().unwrap(), "--out", "-"], &[]);
    out.expect_code(0);
    let html = &out.stdout;
    for needle in [r#"id="rows-read">4<"#, r#"id="rows-rejected">2<"#, r#"id="run-status">rejected<"#, "business date 2026-12-02", "#1 2026-12-01", "#2 2026-12-02"] {
        assert!(html.contains(needle), "the page lacks {needle:?}\n{}", out.evidence());
    }
    let seconds = regex::Regex::new(r#"<td class="n">2</td><td>2026-12-02</td><td>[0-9-]+ [0-9:]+</td><td class="n">([0-9.]+)</td>"#).unwrap();
    assert!(seconds.is_match(html), "the run's row lacks its start or duration\n{html}");
    for rule in ["min", "type"] {
        assert!(html.contains(&format!("\n{rule}\n")), "the rules' chart lacks {rule}\n{html}");
    }
}
