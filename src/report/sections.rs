//! The report's sections: the run's status, the training curves, attentive sampling, the search and the
//! config. Each returns HTML for `html::section`.

use super::charts::{bar_chart, line_chart, Bars, Series, Stroke, GREY, MAX_COLOR, MIN_COLOR, ORANGE, SAMPLED_COLOR};
use super::history::{RunHistory, StepPoint};
use super::html::{escape, figure, format_duration, format_utc, table, tile};
use super::sampling::{candidates_per_draw, choices_per_epoch, target_stats};
use super::search::SearchHistory;
use crate::error::Result;
use crate::train::metrics::Role;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn pct(num: u64, den: u64) -> String {
    if den == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", 100.0 * num as f64 / den as f64)
    }
}

fn series_of(h: &RunHistory, f: impl Fn(&StepPoint) -> Option<f64>) -> Vec<(f64, f64)> {
    h.steps.iter().filter_map(|p| f(p).map(|y| (p.step as f64, y))).collect()
}

/// Status line, tiles and the list of starts.
pub fn summary(h: &RunHistory, now_unix: f64) -> String {
    let last = h.last_step();
    let planned = h.planned_steps();
    let mut status = match planned {
        Some(p) if last >= p => format!("Finished: {last} of {p} steps."),
        Some(p) => {
            format!("In progress or stopped: step {last} of {p} ({:.1}%).", 100.0 * last as f64 / p.max(1) as f64)
        }
        None => format!(
            "In progress or stopped at step {last} (the planned length is known after the first epoch or checkpoint)."
        ),
    };
    if let Some(age) = h.modified.and_then(|m| m.elapsed().ok()) {
        status.push_str(&format!(" The log was last written {} ago.", format_duration(age.as_secs_f64())));
    }
    let mut out = format!("<p class=\"status\">{}</p>", escape(&status));
    if h.partial_tail_bytes > 0 {
        out.push_str(&format!(
            "<p class=\"note\">The log ends in an unfinished line ({} bytes: being written, or cut by a crash); it is left out.</p>",
            h.partial_tail_bytes
        ));
    }
    if h.superseded_lines > 0 {
        out.push_str(&format!(
            "<p class=\"note\">{} logged lines were superseded by later lines for the same steps (a restart without resume); the later ones are shown.</p>",
            h.superseded_lines
        ));
    }
    let mut tiles = vec![tile("steps", &planned.map_or(last.to_string(), |p| format!("{last} / {p}")))];
    tiles.push(tile("epochs validated", &h.epochs.len().to_string()));
    if let Some(e) = h.epochs.last() {
        for r in &e.subnets {
            tiles.push(tile(&format!("{} subnet top-1", r.role.name()), &format!("{:.2}%", r.top1)));
        }
    }
    if let Some(ips) = median(h.steps.iter().map(|p| p.images_per_sec).collect()) {
        tiles.push(tile("median images/s", &format!("{ips:.1}")));
    }
    if let Some(w) = median(h.steps.iter().filter_map(|p| p.data_wait_s).collect()) {
        tiles.push(tile("median data wait", &format!("{:.2} ms/step", w * 1e3)));
    }
    let wall: f64 = h.steps.iter().zip(h.steps.iter().skip(1)).map(|(a, b)| (b.wall_s - a.wall_s).max(0.0)).sum();
    tiles.push(tile("training time logged", &format_duration(wall)));
    out.push_str(&format!("<div class=\"tiles\">{}</div>", tiles.join("")));

    let rows: Vec<Vec<String>> = h
        .starts
        .iter()
        .map(|s| {
            let when = s.unix_time.map_or("-".to_string(), format_utc);
            let what = if s.step == 0 { "start".to_string() } else { format!("resume after step {}", s.step) };
            vec![escape(&what), escape(&when), format!("<code>{}</code>", escape(&s.fingerprint))]
        })
        .collect();
    out.push_str(&table(&["run", "when", "config fingerprint"], &rows));
    if !h.stops.is_empty() {
        let rows: Vec<Vec<String>> = h
            .stops
            .iter()
            .map(|s| {
                vec![
                    s.step.to_string(),
                    escape(&s.reason),
                    escape(s.message.as_deref().unwrap_or("-")),
                    escape(s.checkpoint.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        out.push_str("<p>Early stops (resume with <code>attnas train --resume</code>):</p>");
        out.push_str(&table(&["after step", "reason", "message", "checkpoint"], &rows));
    }
    out.push_str(&format!("<p>Report made {}.</p>", escape(&format_utc(now_unix))));
    out
}

/// Loss per role, accuracy per epoch, LR, throughput and data wait.
pub fn training(h: &RunHistory) -> Result<String> {
    if h.steps.is_empty() {
        return Ok("<p>No step logged yet.</p>".to_string());
    }
    let mut out = String::new();
    let losses = [
        Series::new("max (label-smoothed CE)", MAX_COLOR, series_of(h, |p| p.loss_max), Stroke::Solid),
        Series::new("sampled (KD, mean)", SAMPLED_COLOR, series_of(h, |p| p.loss_sampled), Stroke::Solid),
        Series::new("min (KD)", MIN_COLOR, series_of(h, |p| p.loss_min), Stroke::Solid),
    ];
    out.push_str(&figure(
        &line_chart("Training loss per sandwich role", "step", "loss", &losses)?,
        "Loss of each subnet of the sandwich; long runs are averaged over runs of consecutive steps.",
    ));
    let acc = |role: Role, top5: bool| -> Vec<(f64, f64)> {
        h.epochs
            .iter()
            .flat_map(|e| {
                e.subnets
                    .iter()
                    .filter(move |r| r.role == role)
                    .map(move |r| ((e.epoch + 1) as f64, if top5 { r.top5 } else { r.top1 }))
            })
            .collect()
    };
    if !h.epochs.is_empty() {
        let series = [
            Series::new("max top-1", MAX_COLOR, acc(Role::Max, false), Stroke::Marked),
            Series::new("max top-5", MAX_COLOR, acc(Role::Max, true), Stroke::DashedMarked),
            Series::new("min top-1", MIN_COLOR, acc(Role::Min, false), Stroke::Marked),
            Series::new("min top-5", MIN_COLOR, acc(Role::Min, true), Stroke::DashedMarked),
        ];
        out.push_str(&figure(
            &line_chart(
                "Validation accuracy per epoch (BN recalibrated)",
                "epochs completed",
                "accuracy (%)",
                &series,
            )?,
            "Top-1 and top-5 of the max and min subnets at the end of each epoch.",
        ));
        let rows: Vec<Vec<String>> = h
            .epochs
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|e| {
                let mut row = vec![(e.epoch + 1).to_string(), e.step.to_string()];
                for role in [Role::Max, Role::Min] {
                    let r = e.subnets.iter().find(|r| r.role == role);
                    row.push(r.map_or("-".into(), |r| format!("{:.2}%", r.top1)));
                    row.push(r.map_or("-".into(), |r| format!("{:.2}%", r.top5)));
                }
                row
            })
            .collect();
        out.push_str(&table(&["epoch", "step", "max top-1", "max top-5", "min top-1", "min top-5"], &rows));
    }
    let lr = [Series::new("learning rate", ORANGE, series_of(h, |p| Some(p.lr)), Stroke::Solid)];
    out.push_str(&figure(&line_chart("Learning rate", "step", "LR", &lr)?, "Per-iteration warmup + cosine schedule."));
    let ips = [Series::new("images/s", MAX_COLOR, series_of(h, |p| Some(p.images_per_sec)), Stroke::Solid)];
    out.push_str(&figure(
        &line_chart("Throughput", "step", "images / s", &ips)?,
        "Images per second of the training step (the batch over the step's compute time).",
    ));
    let wait = series_of(h, |p| p.data_wait_s.map(|w| w * 1e3));
    if !wait.is_empty() {
        let s = [Series::new("data wait", GREY, wait, Stroke::Solid)];
        out.push_str(&figure(
            &line_chart("Time waiting for the data loader", "step", "ms per step", &s)?,
            "Milliseconds the trainer waited for the loader's next batch before each step; near zero means decoding keeps up.",
        ));
    }
    Ok(out)
}

/// FLOPs targets against the prior, and the attentive choices.
pub fn sampling(h: &RunHistory) -> Result<String> {
    let mut out = String::new();
    let method = h.config().map(|c| format!("{:?}", c.sampler.method)).unwrap_or_else(|| "?".into());
    match target_stats(h) {
        Some(t) => {
            let bin = h.config().map_or(1.0, |c| c.sampler.discretize_step);
            let mut groups = Vec::new();
            if t.bins.iter().any(|b| b.prior.is_some()) {
                let prior = t.bins.iter().map(|b| (b.mflops, b.prior.unwrap_or(0.0))).collect();
                groups.push(Bars { name: "prior".into(), color: GREY, values: prior });
            }
            let drawn = t.bins.iter().map(|b| (b.mflops, b.drawn as f64 / t.draws as f64)).collect();
            groups.push(Bars { name: format!("drawn ({} targets)", t.draws), color: MIN_COLOR, values: drawn });
            out.push_str(&figure(
                &bar_chart(
                    "FLOPs targets drawn vs the sampler's prior",
                    "target bin (MFLOPs)",
                    "fraction of draws",
                    &groups,
                    bin * 0.8,
                )?,
                "Each attentive draw first picks a FLOPs bin from the prior, then samples candidates inside it.",
            ));
            let mut text =
                format!("{} target draws over {} bins.", t.draws, t.bins.iter().filter(|b| b.drawn > 0).count());
            if let (Some(tv), Some(noise)) = (t.tv_distance, t.tv_noise) {
                text.push_str(&format!(
                    " Total variation distance between the drawn frequencies and the prior: {tv:.3} \
                     (0 = identical; sampling noise alone gives about {noise:.3} for this many draws)."
                ));
            }
            out.push_str(&format!("<p>{}</p>", escape(&text)));
            if let Some(why) = t.prior_note {
                out.push_str(&format!("<p class=\"note\">No prior shown: {}.</p>", escape(&why)));
            }
        }
        None => {
            let mflops: Vec<(f64, f64)> = h.draws.iter().map(|d| (d.step as f64, d.mflops)).collect();
            out.push_str(&format!(
                "<p>Sampler: {}. No attentive FLOPs targets in the log (uniform sampling, or no step yet).</p>",
                escape(&method)
            ));
            if !mflops.is_empty() {
                let s = [Series::new("sampled MFLOPs", SAMPLED_COLOR, mflops, Stroke::Solid)];
                out.push_str(&figure(
                    &line_chart("Sampled subnets' MFLOPs", "step", "MFLOPs", &s)?,
                    "MFLOPs of the middle subnets.",
                ));
            }
        }
    }
    let rows = choices_per_epoch(h);
    if !rows.is_empty() {
        let k = candidates_per_draw(h);
        let (draws, differs): (u64, u64) = rows.iter().fold((0, 0), |(d, n), r| (d + r.draws, n + r.not_first));
        out.push_str(&format!(
            "<p>{} (k = {k}): the trained candidate was another than the first drawn in <b>{differs} of {draws}</b> draws ({}). \
             The candidates are drawn independently, so with k distinct scores {:.1}% is expected whatever the scores mean; \
             fewer points to tied scores (identical candidates, as in a FLOPs bin with few subnets).</p>",
            escape(&method),
            pct(differs, draws),
            100.0 * (k.max(1) - 1) as f64 / k.max(1) as f64
        ));
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|r| {
                vec![
                    (r.epoch + 1).to_string(),
                    r.draws.to_string(),
                    pct(r.not_first, r.draws),
                    r.mean_margin.map_or("-".into(), |m| format!("{m:.4}")),
                ]
            })
            .collect();
        out.push_str(&table(&["epoch", "attentive draws", "choice not the first", "mean score margin"], &table_rows));
        if rows.len() > 1 {
            let s = [Series::new(
                "choice not the first (%)",
                MAX_COLOR,
                rows.iter()
                    .map(|r| ((r.epoch + 1) as f64, 100.0 * r.not_first as f64 / r.draws.max(1) as f64))
                    .collect(),
                Stroke::Marked,
            )];
            out.push_str(&figure(
                &line_chart("Attentive choice vs the first candidate, per epoch", "epoch", "% of draws", &s)?,
                "Score margin: the gap between the chosen candidate's score (minus the minibatch loss) and the runner-up's.",
            ));
        }
    }
    Ok(out)
}

/// The Pareto front of a search.
pub fn search(s: &SearchHistory) -> Result<String> {
    let points = s.points();
    let front_points: Vec<_> = s.front().map(|e| e.point()).collect();
    // a latency search (`--objective latency`) ranks by latency: its points carry ms, not MFLOPs
    let latency = s.evaluated().iter().any(|e| e.latency_ms.is_some());
    let (cost, axis) = if latency { ("latency", "latency (ms)") } else { ("MFLOPs", crate::search::plot::MFLOPS_AXIS) };
    let title = format!("top-1 vs {cost}, {} subnets evaluated", points.len());
    let svg = crate::search::plot::render_svg(&points, &front_points, &title, axis)?;
    let mut out = format!(
        "<p>{} iterations done, {} subnets evaluated, {} on the front (<code>{}</code>).</p>",
        s.state.progress.iterations_done,
        points.len(),
        front_points.len(),
        escape(&s.dir.display().to_string())
    );
    out.push_str(&figure(&svg, "Every evaluated subnet (grey) and the non-dominated front (red)."));
    let rows: Vec<Vec<String>> = s
        .front()
        .map(|e| {
            vec![
                format!("{:.3}", e.mflops),
                e.latency_ms.map_or("-".to_string(), |ms| format!("{ms:.3}")),
                format!("{:.3}", e.params as f64 / 1e6),
                format!("{:.2}%", e.top1),
                format!("{:.2}%", e.top5),
                e.iteration.to_string(),
                e.origin.name().to_string(),
                format!("<code>{}</code>", escape(&e.arch.to_json())),
            ]
        })
        .collect();
    out.push_str(&table(
        &["MFLOPs", "latency (ms)", "params (M)", "top-1", "top-5", "iteration", "origin", "arch"],
        &rows,
    ));
    let identity = serde_json::to_string_pretty(&s.state.identity).unwrap_or_default();
    out.push_str(&format!(
        "<details><summary>What the search is bound to (its identity: checkpoint digest, data, settings)</summary><pre>{}</pre></details>",
        escape(&identity)
    ));
    Ok(out)
}

/// The effective config and fingerprint, and the newest checkpoint.
pub fn config(h: &RunHistory) -> String {
    let Some(start) = h.starts.last() else {
        return "<p>The log has no start line.</p>".to_string();
    };
    let mut out = format!(
        "<p>Space <b>{}</b>, config fingerprint <code>{}</code> (a hash of everything that shapes training; a resume must match it).</p>",
        escape(&start.space),
        escape(&start.fingerprint)
    );
    if let Some(c) = &h.checkpoint {
        out.push_str(&format!(
            "<p>Newest checkpoint: step {} (<code>{}</code>).</p>",
            c.step,
            escape(&c.state_path.display().to_string())
        ));
    }
    let text = serde_json::to_string_pretty(&start.config).unwrap_or_default();
    out.push_str(&format!("<p>Effective config (after <code>--set</code> overrides):</p><pre>{}</pre>", escape(&text)));
    out
}
