//! The self-contained HTML page of `octet compare --html`: the summary, the SQNR of every node
//! in graph order, the most harmful nodes, and the value histograms of their activations.

use octet_quant::evaluate::{Histogram, NodeError};

use crate::compare::Report;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// SQNR per node in graph order (bars), with each node's own loss marked.
fn sqnr_chart(nodes: &[&NodeError]) -> String {
    let (w, h, left, bottom, pad) = (1100.0, 270.0, 44.0, 24.0, 12.0);
    let top = nodes.iter().map(|n| n.sqnr_db.min(80.0)).fold(10.0f64, f64::max);
    let top = (top / 10.0).ceil() * 10.0;
    let step = (w - left - 8.0) / nodes.len().max(1) as f64;
    let y = |db: f64| pad + (h - bottom - pad) * (1.0 - db.clamp(0.0, top) / top);
    let mut s = format!(r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="SQNR per node">"#);
    for t in (0..=(top as i64)).step_by(10) {
        let yy = y(t as f64);
        s += &format!(
            r##"<line x1="{left}" x2="{w}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e6ea"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{t}</text>"##,
            left - 6.0,
            yy + 4.0
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let x = left + i as f64 * step;
        let yy = y(n.sqnr_db);
        let colour = if n.quantized { "#3b6fb6" } else { "#9aa5b1" };
        s += &format!(
            r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} ({}): SQNR {:.1} dB, loss {:.1} dB</title></rect>"#,
            (step - 0.6).max(0.6),
            (h - bottom - yy).max(0.0),
            escape(&n.node),
            escape(&n.op),
            n.sqnr_db,
            n.loss_db
        );
        if n.loss_db >= 3.0 {
            s += &format!(
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.6" fill="#c0392b"><title>{}: loses {:.1} dB</title></circle>"##,
                x + step / 2.0,
                yy - 5.0,
                escape(&n.node),
                n.loss_db
            );
        }
    }
    s += &format!(
        r#"<text x="{left}" y="{}" class="tick">input</text><text x="{w}" y="{}" class="tick" text-anchor="end">output</text>"#,
        h - 6.0,
        h - 6.0
    );
    s += "</svg>";
    s
}

/// One activation's histogram (log counts) with the quantization grid's range shaded.
fn histogram_svg(h: &Histogram) -> String {
    let (w, ht) = (330.0, 120.0);
    let span = (h.hi - h.lo).max(f32::MIN_POSITIVE) as f64;
    let x = |v: f32| 4.0 + (w - 8.0) * ((v - h.lo) as f64 / span).clamp(0.0, 1.0);
    let peak = h.counts.iter().map(|&c| ((c + 1) as f64).ln()).fold(1.0, f64::max);
    let bw = (w - 8.0) / h.counts.len() as f64;
    let mut s = format!(
        r##"<svg viewBox="0 0 {w} {ht}" width="{w}" height="{ht}"><rect x="{:.1}" y="0" width="{:.1}" height="{}" fill="#e8f0fb"/>"##,
        x(h.grid.0),
        x(h.grid.1) - x(h.grid.0),
        ht - 18.0
    );
    for (i, &c) in h.counts.iter().enumerate() {
        let bh = (ht - 20.0) * ((c + 1) as f64).ln() / peak;
        s += &format!(
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#3b6fb6"/>"##,
            4.0 + i as f64 * bw,
            ht - 18.0 - bh,
            (bw - 0.5).max(0.5)
        );
    }
    s += &format!(
        r#"<text x="4" y="{}" class="tick">{:.3}</text><text x="{}" y="{}" class="tick" text-anchor="end">{:.3}</text></svg>"#,
        ht - 4.0,
        h.lo,
        w - 4.0,
        ht - 4.0,
        h.hi
    );
    s
}

/// The page for `report`.
pub fn page(report: &Report) -> String {
    let mut graph_order: Vec<&NodeError> = report.nodes.iter().collect();
    graph_order.sort_by_key(|n| n.position);
    let o = &report.outputs;
    let mut rows = String::new();
    if let (Some(f), Some(q)) = (o.float_accuracy, o.quantized_accuracy) {
        rows += &format!("<tr><th>top-1 accuracy</th><td>float {f:.2} %, quantized {q:.2} % (<b>{:+.2}</b> points)</td></tr>", q - f);
    }
    rows += &format!(
        "<tr><th>top-1 agreement</th><td>{:.2} %</td></tr><tr><th>output cosine</th><td>{:.5}</td></tr><tr><th>output SQNR</th><td>{:.1} dB</td></tr><tr><th>samples</th><td>{} (outputs, int8 kernels); {} (per node, float between dq and q)</td></tr>",
        o.top1_agreement, o.cosine, o.sqnr_db, o.samples, report.node_samples
    );
    let worst: Vec<&NodeError> = report.nodes.iter().take(20).collect();
    let mut table = String::new();
    for n in &worst {
        let clipped = n.histogram.as_ref().map(|h| format!("{:.3} %", h.clipped)).unwrap_or_default();
        table += &format!(
            "<tr><td class=num>{:.1}</td><td class=num>{:.1}</td><td class=num>{}</td><td>{}</td><td><code>{}</code></td><td class=num>{clipped}</td></tr>",
            n.loss_db,
            n.sqnr_db,
            n.grid_sqnr_db.map(|g| format!("{g:.1}")).unwrap_or_else(|| "float".into()),
            escape(&n.op),
            escape(&n.node)
        );
    }
    let mut hists = String::new();
    for n in report.nodes.iter().filter(|n| n.histogram.is_some()).take(12) {
        let h = n.histogram.as_ref().expect("filtered");
        hists += &format!(
            "<figure>{}<figcaption><code>{}</code> ({}) — grid {:.3} … {:.3}, {:.3} % clipped, SQNR {:.1} dB</figcaption></figure>",
            histogram_svg(h),
            escape(&n.value),
            escape(&n.op),
            h.grid.0,
            h.grid.1,
            h.clipped,
            n.sqnr_db
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>octet compare — {quant}</title>
<style>
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2733; margin: 28px auto; max-width: 1120px; padding: 0 16px; }}
h1 {{ font-size: 22px; margin-bottom: 2px; }} h2 {{ font-size: 17px; margin-top: 30px; border-bottom: 1px solid #dde2e8; padding-bottom: 4px; }}
.sub {{ color: #5b6776; margin-top: 0; }} code {{ font-size: 13px; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }}
table.nodes td, table.nodes th {{ border-bottom: 1px solid #edf0f3; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.tick {{ font-size: 11px; fill: #5b6776; }} .legend span {{ display: inline-block; margin-right: 18px; }}
.sw {{ display: inline-block; width: 11px; height: 11px; margin-right: 5px; vertical-align: -1px; }}
.grid {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 14px; }} figure {{ margin: 0; }} figcaption {{ font-size: 12px; color: #3d4956; }}
</style></head><body>
<h1>Quantized vs float</h1>
<p class="sub"><code>{quant}</code> against <code>{float}</code></p>
<table>{rows}</table>
<h2>SQNR of every node, in graph order</h2>
<p class="legend"><span><i class="sw" style="background:#3b6fb6"></i>quantized output</span><span><i class="sw" style="background:#9aa5b1"></i>float output (between dq and q)</span><span><i class="sw" style="background:#c0392b;border-radius:6px"></i>node loses ≥ 3 dB</span> Higher is better; hover a bar for the node.</p>
{chart}
<h2>Most harmful nodes</h2>
<p class="sub">Loss: the worst SQNR among a node's inputs minus the SQNR of its output — what the node itself costs. Grid: the SQNR of the float model's value through the output's grid alone (8 or 16 bits) ("float" when the output is not quantized).</p>
<table class="nodes"><tr><th>loss dB</th><th>SQNR dB</th><th>grid dB</th><th>op</th><th>node</th><th>clipped</th></tr>{table}</table>
<h2>Activation ranges of the most harmful quantized values</h2>
<p class="sub">Histogram of the float model's values (log counts); shaded: the range the output's grid represents.</p>
<div class="grid">{hists}</div>
</body></html>
"#,
        quant = escape(&report.quantized_model.display().to_string()),
        float = escape(&report.float_model.display().to_string()),
        chart = sqnr_chart(&graph_order),
    )
}
