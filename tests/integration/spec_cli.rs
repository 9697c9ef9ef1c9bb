//! `etl validate-spec`, `etl plan` and `etl schema` through the real binary: golden diagnostics
//! for every broken fixture, golden plans for the shipped specs, and the schema's drift check.

use std::collections::BTreeMap;

use crate::util::{etl, files, golden, root};

#[test]
fn shipped_specs_are_valid() {
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "examples/quickstart.yaml", "specs/small_etl_history.yaml"], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("ok: specs/small_etl.yaml"), "{}", out.evidence());
    assert!(out.stdout.contains("ok: specs/small_etl_history.yaml"), "{}", out.evidence());
    assert!(out.stdout.contains("ok: examples/quickstart.yaml"), "{}", out.evidence());
}

#[test]
fn valid_fixtures_are_valid() {
    let dir = root().join("tests/fixtures/specs/valid");
    let specs = files(&dir, "yaml");
    assert!(!specs.is_empty());
    for spec in specs {
        let rel = spec.strip_prefix(root()).unwrap().display().to_string();
        etl(&["validate-spec", &rel], &[]).expect_code(0);
    }
}

/// Each broken spec has one mistake; its diagnostic names the file, line and column, labels the
/// offending text and matches the reviewed golden file.
#[test]
fn invalid_fixtures_fail_with_golden_diagnostics() {
    let dir = root().join("tests/fixtures/specs/invalid");
    let specs = files(&dir, "yaml");
    assert!(specs.len() >= 25, "the issue asks for at least 25 broken specs, found {}", specs.len());
    let line_col = regex::Regex::new(r"╭─\[tests/fixtures/specs/invalid/[a-z_]+\.yaml:\d+:\d+\]").unwrap();
    for spec in specs {
        let rel = spec.strip_prefix(root()).unwrap().display().to_string();
        let name = spec.file_stem().unwrap().to_string_lossy().into_owned();
        let out = etl(&["validate-spec", &rel], &[]);
        out.expect_code(2);
        assert!(out.stdout.is_empty(), "nothing on stdout for an invalid spec\n{}", out.evidence());
        assert!(line_col.is_match(&out.stderr), "the diagnostic names file:line:col\n{}", out.evidence());
        assert!(out.stderr.contains("1 problem found"), "one mistake, one problem\n{}", out.evidence());
        golden(&format!("tests/golden/validate/{name}.txt"), &out.stderr, &out.evidence());
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let out = etl(&["validate-spec", "tests/fixtures/specs/several_mistakes.yaml"], &[]);
    out.expect_code(2);
    golden("tests/golden/validate/several_mistakes.txt", &out.stderr, &out.evidence());
    assert!(out.stderr.contains("4 problems found"), "{}", out.evidence());
}

#[test]
fn every_cycle_of_needs_is_reported() {
    let out = etl(&["validate-spec", "tests/fixtures/specs/two_cycles.yaml"], &[]);
    out.expect_code(2);
    golden("tests/golden/validate/two_cycles.txt", &out.stderr, &out.evidence());
    assert!(out.stderr.contains("a → b → a") && out.stderr.contains("c → d → c"), "{}", out.evidence());
    assert!(out.stderr.contains("2 problems found"), "{}", out.evidence());
}

/// A foreign key between colocated tables that is not on the referenced table's distribution
/// column is reported, beside the unique column that made it possible.
#[test]
fn a_foreign_key_off_the_distribution_column_is_reported_with_the_unique_column() {
    let out = etl(&["validate-spec", "tests/fixtures/specs/citus_reference_off_the_distribution_column.yaml"], &[]);
    out.expect_code(2);
    golden("tests/golden/validate/citus_reference_off_the_distribution_column.txt", &out.stderr, &out.evidence());
    assert!(out.stderr.contains("spec::distribution_unique") && out.stderr.contains("spec::distributed_reference"), "{}", out.evidence());
    assert!(out.stderr.contains("2 problems found"), "{}", out.evidence());
}

#[test]
fn validate_spec_reports_each_file_and_fails_if_any_fails() {
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "tests/fixtures/specs/invalid/bad_cron.yaml"], &[]);
    out.expect_code(2);
    assert!(out.stdout.contains("ok: specs/small_etl.yaml"), "{}", out.evidence());
    assert!(out.stderr.contains("1 of 2 specs are invalid"), "{}", out.evidence());
}

#[test]
fn a_missing_spec_file_is_a_clear_error() {
    let out = etl(&["validate-spec", "specs/nope.yaml"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("cannot read spec specs/nope.yaml"), "{}", out.evidence());
}

#[test]
fn bad_arguments_exit_2_and_help_exits_0() {
    etl(&["validate-spec"], &[]).expect_code(2);
    etl(&["no-such-command"], &[]).expect_code(2);
    let help = etl(&["--help"], &[]);
    help.expect_code(0);
    assert!(help.stdout.contains("validate-spec"), "{}", help.evidence());
}

#[test]
fn plans_of_the_shipped_specs_match_their_goldens() {
    for (spec, name, extra) in [
        ("specs/small_etl.yaml", "small_etl", &[][..]),
        ("examples/quickstart.yaml", "quickstart", &[]),
        ("specs/daily.yaml", "daily", &[]),
        ("specs/small_etl_history.yaml", "small_etl_history", &[]),
        // Computed columns: each expression's compiled SQL is shown.
        ("tests/fixtures/specs/valid/computed_columns.yaml", "computed_columns", &[]),
        // On a Citus cluster: the tables spread, the upsert and the state read the Citus way.
        ("specs/small_etl.yaml", "small_etl_citus", &["--env", "citus"]),
    ] {
        // A fixed business date: the daily spec's patterns name it.
        let mut args = vec!["plan", spec, "--date", "2025-12-22"];
        args.extend(extra);
        let out = etl(&args, &[]);
        out.expect_code(0);
        golden(&format!("tests/golden/plan/{name}.txt"), &out.stdout, &out.evidence());
    }
}

#[test]
fn plan_of_one_stage_and_of_an_unknown_stage() {
    let out = etl(&["plan", "specs/small_etl.yaml", "--stage", "trades"], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("== stage trades =="), "{}", out.evidence());
    assert!(!out.stdout.contains("== stage assets =="), "{}", out.evidence());
    let out = etl(&["plan", "specs/small_etl.yaml", "--stage", "trade"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("did you mean `trades`?"), "{}", out.evidence());
}

#[test]
fn plan_defaults_to_etl_spec_then_small_etl() {
    let out = etl(&["plan"], &[]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("plan for small_etl"), "{}", out.evidence());
    let out = etl(&["plan"], &[("ETL_SPEC", "examples/quickstart.yaml")]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("plan for quickstart"), "{}", out.evidence());
}

#[test]
fn set_overrides_any_value_and_is_typed_by_the_schema() {
    let out = etl(&["plan", "specs/small_etl.yaml", "--set", "defaults.batch_size=500", "--set", "stages.assets.source.key=assets_2025.csv"], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("batches of 500"), "{}", out.evidence());
    assert!(out.stdout.contains("read_csv('assets_2025.csv'"), "{}", out.evidence());
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "--set", "defaults.batch_size=many"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("`defaults.batch_size` must be a whole number, not the text `many`"), "{}", out.evidence());
    assert!(out.stderr.contains("--set defaults.batch_size"), "the problem points at the --set value\n{}", out.evidence());
}

#[test]
fn env_overlay_layers_configs_and_environment_wins() {
    let out = etl(&["plan", "specs/small_etl.yaml", "--env", "test"], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("batches of 1000"), "configs/test.yaml sets batch_size\n{}", out.evidence());
    let out = etl(&["plan", "specs/small_etl.yaml", "--env", "staging"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("no overlay for --env staging"), "{}", out.evidence());
    // A templated port from the environment is read as the number the schema wants.
    etl(&["validate-spec", "specs/small_etl.yaml"], &[("DB_PORT", "5433")]).expect_code(0);
    let out = etl(&["validate-spec", "specs/small_etl.yaml"], &[("DB_PORT", "54x")]);
    out.expect_code(2);
    assert!(out.stderr.contains("connections.db.port"), "{}", out.evidence());
}

#[test]
fn secrets_never_appear_in_plan_or_diagnostics() {
    let secret = "Sup3r-Secret-Pa55";
    let env = [("DB_PASSWORD", secret), ("S3_SECRET_KEY", secret)];
    let out = etl(&["plan", "specs/small_etl.yaml"], &env);
    out.expect_code(0);
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{}", out.evidence());
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "--set", "connections.db.port=x"], &env);
    out.expect_code(2);
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{}", out.evidence());
}

/// The committed schema is what the code generates: it cannot drift.
#[test]
fn committed_schema_matches_the_generated_one() {
    let out = etl(&["schema"], &[]);
    out.expect_code(0);
    golden("schemas/etl-spec.schema.json", &out.stdout, &out.evidence());
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["additionalProperties"], false, "unknown keys are errors");
}

/// Every spec and example we ship carries the modeline that points editors at the schema.
#[test]
fn shipped_specs_carry_the_schema_modeline() {
    let mut checked = BTreeMap::new();
    for dir in ["specs", "examples", "tests/fixtures/specs/valid", "tests/fixtures/csv"] {
        for f in files(&root().join(dir), "yaml") {
            let text = std::fs::read_to_string(&f).unwrap();
            let first = text.lines().next().unwrap_or("");
            checked.insert(f.display().to_string(), first.to_string());
            assert!(
                first.starts_with("# yaml-language-server: $schema=") && first.ends_with("schemas/etl-spec.schema.json"),
                "{} lacks the modeline; its first line is {first:?}",
                f.display()
            );
        }
    }
    assert!(checked.len() >= 3);
}

/// The README's spec reference is generated from the schema.
#[test]
fn readme_spec_reference_is_generated_from_the_schema() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = "<!-- spec-reference:start -->\n";
    let end = "<!-- spec-reference:end -->";
    let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
        panic!("README.md lacks the spec reference markers");
    };
    let current = &readme[a + start.len()..b];
    let generated = etl(&["schema", "--markdown"], &[]);
    generated.expect_code(0);
    if crate::util::update_golden() {
        let updated = format!("{}{}{}", &readme[..a + start.len()], generated.stdout, &readme[b..]);
        std::fs::write(root().join("README.md"), updated).unwrap();
        return;
    }
    assert_eq!(current, generated.stdout, "README spec reference is stale: run the tests with UPDATE_GOLDEN=1");
}

/// Schema problems and semantic problems come in one pass where the schema's leave the rest
/// checkable.
#[test]
fn schema_and_semantic_problems_are_reported_in_one_pass() {
    let out = etl(&["validate-spec", "tests/fixtures/specs/schema_and_semantic_mistakes.yaml"], &[]);
    out.expect_code(2);
    golden("tests/golden/validate/schema_and_semantic_mistakes.txt", &out.stderr, &out.evidence());
    for expected in ["fifty", "upsrt", "unknown column `csh`", "acounts"] {
        assert!(out.stderr.contains(expected), "`{expected}` is reported\n{}", out.evidence());
    }
    assert!(out.stderr.contains("4 problems found"), "{}", out.evidence());
}

/// `validate-spec --output json`: one document, each spec with its problems placed.
#[test]
fn validate_spec_speaks_json() {
    let out = etl(&["validate-spec", "--output", "json", "specs/small_etl.yaml", "tests/fixtures/specs/invalid/bad_cron.yaml"], &[]);
    out.expect_code(2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    assert_eq!(doc["specs"][0]["valid"], true, "{doc}");
    assert_eq!(doc["specs"][1]["valid"], false, "{doc}");
    let p = &doc["specs"][1]["problems"][0];
    assert_eq!(p["file"], "tests/fixtures/specs/invalid/bad_cron.yaml", "{doc}");
    assert!(p["line"].as_u64().is_some_and(|l| l > 1) && p["column"].as_u64().is_some(), "{doc}");
    assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()) && p["code"].as_str().is_some(), "{doc}");
}

/// A problem a `--set` made points at the `--set`, not at a line of the spec it did not write.
#[test]
fn a_problem_made_by_a_set_points_at_the_set() {
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "--set", "stages.nope.target.table=x"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("[--set stages.nope.target.table:"), "{}", out.evidence());
    assert!(!out.stderr.contains("[specs/small_etl.yaml:"), "points into the spec\n{}", out.evidence());
    let out = etl(&["validate-spec", "specs/small_etl.yaml", "--set", "stages.assets.columns.cash.max=-1"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("[--set stages.assets.columns.cash.max:"), "{}", out.evidence());
}

/// CLI conventions: `plan` takes the flags of the run it describes, and `migrate` refuses flags
/// it would ignore.
#[test]
fn plan_takes_the_runs_flags_and_migrate_refuses_what_it_ignores() {
    let out = etl(&["plan", "specs/small_etl.yaml", "--db-host", "db.internal", "--source", "trades=trades_2025.csv", "--stage", "trades"], &[]);
    out.expect_code(0);
    assert!(out.stdout.contains("trades_2025.csv"), "the plan shows the run --source makes\n{}", out.evidence());
    // (tests/fixtures/specs/valid/unicode_names.yaml, names in several scripts, is checked by
    // `valid_fixtures_are_valid`.)
    let out = etl(&["migrate", "specs/small_etl.yaml", "--stage", "assets"], &[]);
    out.expect_code(2);
}

/// `etl plan --output json`: the plan's sections and steps, the same statements as its text.
#[test]
fn plan_speaks_json() {
    let out = etl(&["plan", "specs/small_etl.yaml", "--output", "json"], &[]);
    out.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.evidence()));
    let sections = doc["sections"].as_array().unwrap_or_else(|| panic!("{doc}"));
    let assets = sections.iter().find(|s| s["section"] == "stage assets").unwrap_or_else(|| panic!("{doc}"));
    let steps = assets["steps"].as_array().unwrap();
    let read = steps.iter().find(|s| s["step"].as_str().is_some_and(|t| t.contains("read and cast"))).unwrap_or_else(|| panic!("{assets}"));
    assert!(read["text"].as_str().unwrap().contains("read_csv"), "{read}");
    let text = etl(&["plan", "specs/small_etl.yaml"], &[]).stdout;
    for s in steps {
        for line in s["text"].as_str().unwrap().lines() {
            assert!(text.contains(line), "a line the text does not have: {line}");
        }
    }
}

/// Every test the README and tests/MUTANTS.md name (`run::money_is_exact_...`, a unit test's
/// `exec::layout::tests::...`, or a module's tests, `bad_input::`) exists: a renamed or removed
/// test would leave a guarantee naming nothing.
#[test]
fn every_test_the_documents_name_exists() {
    let named = regex::Regex::new(r"`([a-z_0-9]+(?:::[a-z_0-9]+)*::(?:[a-z_0-9]+)?)`").unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["README.md", "tests/MUTANTS.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for m in named.captures_iter(&text) {
            let path = &m[1];
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            checked += 1;
            if !test_exists(&segments) {
                missing.push(format!("{doc}: `{path}`"));
            }
        }
    }
    assert!(checked > 100, "only {checked} tests named: is the pattern right?");
    assert!(missing.is_empty(), "named in the documents, but no such test:\n{}", missing.join("\n"));
}

/// Whether `segments` name an integration test (`module`, `module::test`), or a unit test or
/// test module in the library (`exec::layout::tests`, `exec::layout::tests::test`).
fn test_exists(segments: &[&str]) -> bool {
    let has_fn = |file: &std::path::Path, name: &str| std::fs::read_to_string(file).is_ok_and(|t| t.contains(&format!("fn {name}(")));
    let integration = root().join("tests/integration").join(format!("{}.rs", segments[0]));
    if integration.exists() {
        return match segments {
            [_] => true,
            [_, name] => has_fn(&integration, name),
            _ => false,
        };
    }
    // The longest module path that is a file of src/, then `tests` and the test's name.
    for split in (1..=segments.len()).rev() {
        let module = segments[..split].join("/");
        let file = [format!("src/{module}.rs"), format!("src/{module}/mod.rs")].into_iter().map(|f| root().join(f)).find(|f| f.exists());
        let Some(file) = file else { continue };
        return match &segments[split..] {
            ["tests"] => std::fs::read_to_string(&file).is_ok_and(|t| t.contains("mod tests")),
            ["tests", name] => has_fn(&file, name),
            _ => false,
        };
    }
    false
}
