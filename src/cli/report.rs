//! `etl report`: a self-contained HTML page of a run, read from the run records: the run, each
//! stage's counts, rejects by rule and by column, contracts, a set's files, and the runs before
//! it over time. The page is a minijinja template (escaped as HTML); its charts are SVG drawn by
//! plotters, inline: nothing is fetched when the page is viewed, and it runs no script.

use plotters::prelude::*;
use serde::Serialize;

use super::args::ReportArgs;
use super::error::CliError;
use super::prepare::prepare;
use super::render::print;
use crate::exec::postgres::records::{History, RunRow, StageRow};
use crate::exec::progress::bytes;
use crate::{exec, exit};

const TEMPLATE: &str = include_str!("report.html");

/// Runs `etl report`.
pub fn run(args: ReportArgs) -> Result<u8, CliError> {
    let p = prepare(&super::args::RunArgs::database_only(args.spec_path.clone(), Vec::new(), args.db.clone(), args.spec.clone()))?;
    let history = exec::admin::history(&p.plan, &p.opts, args.run, args.last)?;
    let Some(run) = history.runs.first() else {
        let which = args.run.map_or(String::new(), |r| format!(" up to run {r}"));
        return Err(CliError::flag("etl report", format!("spec {} has no run recorded{which}", p.plan.name), "run it first (`etl run`), or give a --run it made"));
    };
    if let Some(wanted) = args.run.filter(|r| *r != run.run_id) {
        return Err(CliError::flag("etl report", format!("spec {} has no run {wanted}", p.plan.name), format!("its latest run before it is {}: `etl report --run {}`", run.run_id, run.run_id)));
    }
    let page = page(&p.plan.name, &history).map_err(|m| CliError::System { what: "draw the report".into(), message: m })?;
    match args.out.as_deref() {
        Some(out) if out.as_os_str() == "-" => print(&page),
        out => {
            let out = out.map(std::path::Path::to_path_buf).unwrap_or_else(|| format!("etl-report-{}.html", p.plan.name).into());
            std::fs::write(&out, &page).map_err(|e| CliError::flag("etl report --out", format!("cannot write {}: {e}", out.display()), "give a file in a directory you can write"))?;
            eprintln!("wrote {}: run {} of spec {} ({})", out.display(), run.run_id, p.plan.name, run.status);
        }
    }
    Ok(exit::OK)
}

/// One stage of the reported run, as the page shows it.
#[derive(Serialize)]
struct StageView {
    stage: String,
    source: String,
    size: String,
    status: String,
    read: i64,
    valid: i64,
    rejected: i64,
    warned: i64,
    inserted: i64,
    updated: i64,
    unchanged: i64,
    seconds: String,
    note: String,
}

/// A run of the history table.
#[derive(Serialize)]
struct RunView {
    run_id: i64,
    date: String,
    started_at: String,
    seconds: String,
    status: String,
    job: String,
    read: i64,
    rejected: i64,
    error: String,
}

/// The page: the template filled with the history and its charts.
pub fn page(spec: &str, h: &History) -> Result<String, String> {
    let run = h.runs.first().ok_or("no run")?;
    let focus: Vec<&StageRow> = h.stages.iter().filter(|s| s.run_id == run.run_id).collect();
    let n = |v: Option<i64>| v.unwrap_or(0);
    let stages: Vec<StageView> = focus
        .iter()
        .map(|s| StageView {
            stage: s.stage.clone(),
            source: s.source.clone(),
            size: s.bytes.map_or("-".into(), |b| bytes(b as u64)),
            status: s.status.clone(),
            read: n(s.rows_read),
            valid: n(s.rows_read) - n(s.rejected),
            rejected: n(s.rejected),
            warned: n(s.warned),
            inserted: n(s.inserted),
            updated: n(s.updated),
            unchanged: n(s.unchanged),
            seconds: s.seconds.map_or("-".into(), |t| format!("{t:.2}")),
            note: match (&s.unchanged_since, &s.error) {
                (Some(r), _) => format!("unchanged since run {r}: not loaded again"),
                (None, Some(e)) => e.clone(),
                _ => String::new(),
            },
        })
        .collect();
    let runs: Vec<RunView> = h
        .runs
        .iter()
        .map(|r| {
            let of = h.stages.iter().filter(|s| s.run_id == r.run_id);
            RunView {
                run_id: r.run_id,
                date: r.business_date.clone().unwrap_or_default(),
                started_at: r.started_at.clone(),
                seconds: r.seconds.map_or("running".into(), |t| format!("{t:.2}")),
                status: r.status.clone(),
                job: r.job_id.clone().unwrap_or_default(),
                read: of.clone().map(|s| n(s.rows_read)).sum(),
                rejected: of.map(|s| n(s.rejected)).sum(),
                error: r.error.clone().unwrap_or_default(),
            }
        })
        .collect();
    let several = focus.len() > 1;
    let label = |stage: &str, what: &str| if several { format!("{stage} · {what}") } else { what.to_string() };
    let by_rule: Vec<(String, i64)> = h.by_rule.iter().map(|(s, r, c)| (label(s, r), *c)).collect();
    let by_column: Vec<(String, i64)> = h.by_column.iter().map(|(s, c, k)| (label(s, c), *k)).collect();
    let over_time = OverTime::new(&h.runs, &h.stages);
    let charts = serde_json::json!({
        "by_rule": if by_rule.is_empty() { String::new() } else { bars("Rejected rows by rule", &by_rule, "row")? },
        "by_column": if by_column.is_empty() { String::new() } else { bars("Rejected values by column", &by_column, "value")? },
        "read": over_time.chart("Rows read per run", |s| s.rows_read.map(|v| v as f64))?,
        "rejected": over_time.chart("Rows rejected per run", |s| s.rejected.map(|v| v as f64))?,
        "seconds": over_time.chart("Stage duration per run (seconds)", |s| s.seconds)?,
    });
    let checks: Vec<serde_json::Value> = h
        .checks
        .iter()
        .map(|c| serde_json::json!({ "stage": c.stage, "check": c.check, "severity": c.severity, "passed": c.passed, "observed": c.observed, "expected": c.expected, "message": c.message }))
        .collect();
    let files: Vec<serde_json::Value> = h
        .files
        .iter()
        .map(|f| serde_json::json!({ "stage": f.stage, "file": f.file, "size": bytes(f.bytes as u64), "read": f.rows_read, "loaded": f.rows_loaded, "rejected": f.rows_rejected }))
        .collect();
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE).map_err(|e| e.to_string())?;
    let ctx = serde_json::json!({
        "spec": spec,
        "run": run,
        "seconds": run.seconds.map_or("running".into(), |t| format!("{t:.2}")),
        "stages": stages,
        "runs": runs,
        "charts": charts,
        "checks": checks,
        "files": files,
        "generated_at": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    env.get_template("report.html").and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx)))).map_err(|e| e.to_string())
}

/// A horizontal bar chart of counts, largest on top, as SVG.
fn bars(title: &str, items: &[(String, i64)], unit: &str) -> Result<String, String> {
    let items: Vec<&(String, i64)> = items.iter().take(20).collect();
    let n = items.len();
    let max = items.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    let widest = items.iter().map(|(l, _)| unicode_width::UnicodeWidthStr::width(l.as_str())).max().unwrap_or(4);
    let height = 80 + 36 * n as u32;
    // The segment of item `i` (0 = largest) counted from the bottom.
    let row = move |i: usize| n - 1 - i;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size((widest as u32 * 9 + 16).clamp(60, 340))
            .build_cartesian_2d(0i64..max + max / 8 + 1, (0usize..n - 1).into_segmented())
            .map_err(err)?;
        let names: Vec<String> = items.iter().map(|(l, _)| l.clone()).collect();
        let label = move |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(k) if *k < n => names[row(*k)].clone(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&label)
            .x_labels(6)
            .x_label_formatter(&|v| v.to_string())
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(Histogram::horizontal(&chart).style(RGBColor(0xc0, 0x39, 0x2b).filled()).margin(5).data(items.iter().enumerate().map(|(i, (_, c))| (row(i), *c))))
            .map_err(err)?;
        // Each bar's count at its end.
        chart
            .draw_series(items.iter().enumerate().map(|(i, (_, c))| Text::new(format!(" {c} {unit}{}", if *c == 1 { "" } else { "s" }), (*c, SegmentValue::CenterOf(row(i))), ("sans-serif", 16))))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The runs of the history in time order, with their stages, for line charts.
struct OverTime<'a> {
    runs: Vec<&'a RunRow>,
    stages: Vec<String>,
    rows: &'a [StageRow],
}

impl<'a> OverTime<'a> {
    fn new(runs: &'a [RunRow], rows: &'a [StageRow]) -> OverTime<'a> {
        let mut stages: Vec<String> = Vec::new();
        for s in rows {
            if !stages.contains(&s.stage) {
                stages.push(s.stage.clone());
            }
        }
        OverTime { runs: runs.iter().rev().collect(), stages, rows }
    }

    /// A line per stage of `value` over the runs, as SVG.
    fn chart(&self, title: &str, value: impl Fn(&StageRow) -> Option<f64>) -> Result<String, String> {
        let n = self.runs.len();
        let series: Vec<(&String, Vec<(i32, f64)>)> = self
            .stages
            .iter()
            .map(|stage| {
                let points = self
                    .runs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| self.rows.iter().find(|s| s.run_id == r.run_id && &s.stage == stage).and_then(&value).map(|v| (i as i32, v)))
                    .collect();
                (stage, points)
            })
            .collect();
        let top = series.iter().flat_map(|(_, p)| p.iter().map(|(_, v)| *v)).fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let labels: Vec<String> = self.runs.iter().map(|r| r.business_date.clone().map_or(format!("#{}", r.run_id), |d| format!("#{} {d}", r.run_id))).collect();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (720, 300)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(-1i32..n as i32, 0f64..top)
                .map_err(err)?;
            let label = move |i: &i32| usize::try_from(*i).ok().and_then(|i| labels.get(i)).cloned().unwrap_or_default();
            chart
                .configure_mesh()
                .x_labels(n.clamp(2, 8) + 2)
                .x_label_formatter(&label)
                .y_labels(6)
                .y_label_formatter(&|v| if top < 10.0 { format!("{v:.2}") } else { format!("{v:.0}") })
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(err)?;
            for (k, (stage, points)) in series.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(stage.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(err)?;
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK.mix(0.3)).position(SeriesLabelPosition::UpperLeft).label_font(("sans-serif", 15)).draw().map_err(err)?;
            root.present().map_err(err)?;
        }
        Ok(svg)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}
