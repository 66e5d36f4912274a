//! Executor behaviour: failures, panics, cancellation, budgets, parallel branches, deep chains.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Trace, graph, session};
use veetance_engine::{
    Budgets, CancelToken, Event, NoEvents, Outcome, PlanError, RunEnv, RunOptions, RunStatus, Value,
};

fn run(
    source: &str,
    options: &RunOptions,
    cancel: &CancelToken,
) -> (veetance_engine::RunReport, String) {
    let trace = Trace::default();
    let sink = trace.sink();
    let report = session(None)
        .run(&graph(source), &RunEnv::new("out"), options, &sink, cancel)
        .unwrap();
    (report, trace.take_sorted())
}

#[test]
fn a_panicking_node_becomes_that_nodes_error_and_the_run_stops_cleanly() {
    let source = r#"Workflow(version: 1, nodes: {
        "one": Node(kind: "Number", inputs: {"value": Int(1)}),
        "boom": Node(kind: "Panic", inputs: {"x": Link("one", "value")}),
        "after": Node(kind: "Add", inputs: {"a": Link("boom", "y")}),
        "print": Node(kind: "Print", inputs: {"value": Link("after", "sum")}),
    })"#;
    let (report, trace) = run(source, &RunOptions::default(), &CancelToken::new());
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.failure(),
        Some(("boom", "panicked: deliberate test panic"))
    );
    insta::assert_snapshot!(trace, @r"
    failed boom: panicked: deliberate test panic
    ran boom
    ran one
    ");
    let after = report
        .nodes
        .iter()
        .find(|n| n.node.as_ref() == "after")
        .unwrap();
    assert_eq!(after.outcome, Outcome::NotRun);
}

#[test]
fn a_failing_node_reports_its_error_with_the_node() {
    let source = r#"Workflow(version: 1, nodes: {
        "one": Node(kind: "Number"),
        "bad": Node(kind: "Fail", inputs: {"x": Link("one", "value")}),
        "print": Node(kind: "Print", inputs: {"value": Link("bad", "y")}),
    })"#;
    let (report, _) = run(source, &RunOptions::default(), &CancelToken::new());
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.failure(), Some(("bad", "the disk is full")));
}

#[test]
fn cancelling_stops_a_running_node_within_a_step_and_runs_nothing_after() {
    let source = r#"Workflow(version: 1, nodes: {
        "one": Node(kind: "Number"),
        "slow": Node(kind: "Slow", inputs: {"x": Link("one", "value"), "steps": Int(500)}),
        "print": Node(kind: "Print", inputs: {"value": Link("slow", "y")}),
    })"#;
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    let started = Instant::now();
    let progress_seen = Arc::new(Mutex::new(0u64));
    let seen = progress_seen.clone();
    let sink = move |event: Event| {
        if let Event::Progress { step, .. } = event {
            *seen.lock().unwrap() = step;
            if step == 3 {
                canceller.cancel();
            }
        }
    };
    let report = session(None)
        .run(
            &graph(source),
            &RunEnv::new("out"),
            &RunOptions::default(),
            &sink,
            &cancel,
        )
        .unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "500 steps of 20 ms were not cut short"
    );
    assert_eq!(*progress_seen.lock().unwrap(), 3);
    let outcomes: Vec<(String, Outcome)> = report
        .nodes
        .iter()
        .map(|n| (n.node.to_string(), n.outcome.clone()))
        .filter(|(_, o)| !matches!(o, Outcome::Ran { .. }))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("slow".to_owned(), Outcome::Cancelled),
            ("print".to_owned(), Outcome::NotRun)
        ]
    );
}

#[test]
fn a_run_cancelled_before_it_starts_runs_nothing() {
    let source = r#"Workflow(version: 1, nodes: {
        "one": Node(kind: "Number"),
        "print": Node(kind: "Print", inputs: {"value": Link("one", "value")}),
    })"#;
    let cancel = CancelToken::new();
    cancel.cancel();
    let (report, trace) = run(source, &RunOptions::default(), &cancel);
    assert_eq!(report.status, RunStatus::Cancelled);
    insta::assert_snapshot!(trace, @"cancelled -");
}

#[test]
fn a_plan_over_the_memory_budget_is_refused_before_anything_runs() {
    let source = r#"Workflow(version: 1, nodes: {
        "small": Node(kind: "Huge", inputs: {"mib": Int(10)}),
        "big": Node(kind: "Huge", inputs: {"mib": Int(3000)}),
        "print": Node(kind: "Print", inputs: {"value": Link("big", "mib")}),
        "print2": Node(kind: "Print", inputs: {"value": Link("small", "mib")}),
    })"#;
    let options = RunOptions {
        budgets: Budgets {
            ram_bytes: Some(2 << 30),
            vram_bytes: None,
        },
        ..RunOptions::default()
    };
    let trace = Trace::default();
    let sink = trace.sink();
    let err = session(None)
        .run(
            &graph(source),
            &RunEnv::new("out"),
            &options,
            &sink,
            &CancelToken::new(),
        )
        .unwrap_err();
    assert!(matches!(err, PlanError::OverBudget { ref node, .. } if node == "big"));
    insta::assert_snapshot!(err.to_string(), @"node `big` (Huge) needs an estimated 2.9 GiB of RAM but the budget is 2.0 GiB; lower its width/height or batch, load the model in a smaller dtype, or raise --ram-budget");
    assert_eq!(trace.take_sorted(), "");
}

#[test]
fn independent_branches_run_concurrently() {
    // Two slow branches of 10 x 20 ms each: sequential would take 400 ms.
    let source = r#"Workflow(version: 1, nodes: {
        "one": Node(kind: "Number"),
        "left": Node(kind: "Slow", inputs: {"x": Link("one", "value"), "steps": Int(10)}),
        "right": Node(kind: "Slow", inputs: {"x": Int(2), "steps": Int(10)}),
        "print": Node(kind: "Print", inputs: {"value": Link("left", "y")}),
        "print2": Node(kind: "Print", inputs: {"value": Link("right", "y")}),
    })"#;
    let running = Arc::new(Mutex::new((0usize, 0usize)));
    let tracker = running.clone();
    let sink = move |event: Event| {
        let mut counts = tracker.lock().unwrap();
        match event {
            Event::NodeStarted { kind, .. } if kind.as_ref() == "Slow" => {
                counts.0 += 1;
                counts.1 = counts.1.max(counts.0);
            }
            Event::NodeFinished { kind, .. } if kind.as_ref() == "Slow" => counts.0 -= 1,
            _ => {}
        }
    };
    let report = session(None)
        .run(
            &graph(source),
            &RunEnv::new("out"),
            &RunOptions::default(),
            &sink,
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        running.lock().unwrap().1,
        2,
        "both slow branches overlapped"
    );
}

#[test]
fn only_what_the_targets_need_runs() {
    let source = r#"Workflow(version: 1, nodes: {
        "one": Node(kind: "Number", inputs: {"value": Int(1)}),
        "two": Node(kind: "Number", inputs: {"value": Int(2)}),
        "sum": Node(kind: "Add", inputs: {"a": Link("one", "value")}),
        "unused": Node(kind: "Add", inputs: {"a": Link("two", "value")}),
        "print": Node(kind: "Print", inputs: {"value": Link("sum", "sum")}),
    })"#;
    let (report, trace) = run(source, &RunOptions::default(), &CancelToken::new());
    insta::assert_snapshot!(trace, @r"
    ran one
    ran print
    ran sum
    ");
    assert!(matches!(report.output("sum", "sum"), Some(Value::Int(1))));
    let options = RunOptions {
        targets: Some(vec!["unused".to_owned()]),
        ..RunOptions::default()
    };
    let (report, trace) = run(source, &options, &CancelToken::new());
    insta::assert_snapshot!(trace, @r"
    ran two
    ran unused
    ");
    assert!(matches!(
        report.output("unused", "sum"),
        Some(Value::Int(2))
    ));
}

#[test]
fn a_node_whose_file_vanished_fails_with_the_path_in_the_error() {
    let source = r#"Workflow(version: 1, nodes: {
        "read": Node(kind: "ReadFile", inputs: {"path": Text("/nonexistent/prompt.txt")}),
        "print": Node(kind: "Print", inputs: {"text": Link("read", "text")}),
    })"#;
    let (report, _) = run(source, &RunOptions::default(), &CancelToken::new());
    assert_eq!(report.status, RunStatus::Failed);
    let (node, error) = report.failure().unwrap();
    assert_eq!(node, "read");
    assert!(
        error.starts_with("reading /nonexistent/prompt.txt: "),
        "{error}"
    );
}

#[test]
fn a_hundred_thousand_node_chain_validates_and_runs_without_recursion() {
    let n = 100_000;
    let mut source = String::from(
        "Workflow(version: 1, nodes: {\"n0\": Node(kind: \"Number\", inputs: {\"value\": Int(1)}),\n",
    );
    for idx in 1..n {
        source.push_str(&format!(
            "\"n{idx}\": Node(kind: \"Add\", inputs: {{\"a\": Link(\"n{}\", \"{}\"), \"b\": Int(1)}}),\n",
            idx - 1,
            if idx == 1 { "value" } else { "sum" }
        ));
    }
    source.push_str(&format!(
        "\"print\": Node(kind: \"Print\", inputs: {{\"value\": Link(\"n{}\", \"sum\")}}),\n}})",
        n - 1
    ));
    // Run on a small stack on purpose: nothing may recurse over the chain's depth.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let graph = graph(&source);
            let report = session(None)
                .run(
                    &graph,
                    &RunEnv::new("out"),
                    &RunOptions::default(),
                    &NoEvents,
                    &CancelToken::new(),
                )
                .unwrap();
            assert_eq!(report.status, RunStatus::Succeeded);
            match report.output(&format!("n{}", n - 1), "sum") {
                Some(Value::Int(v)) => *v,
                other => panic!("{other:?}"),
            }
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), n as i64);
}
