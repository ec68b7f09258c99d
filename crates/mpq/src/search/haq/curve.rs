//! HAQ (Wang et al., CVPR 2019): the learning curve of a search as a hand-written SVG:
//! every episode's reward (accuracy loss against FP on the reward split, in points), warm-up
//! episodes in grey, the agent's episodes in blue, the best so far as a red step line and the
//! end of the warm-up as a dashed line.

use std::fmt::Write as _;

use super::HaqHistory;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 50.0;

fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// The SVG learning curve of `history`; `warmup` is the number of random episodes.
pub fn learning_curve_svg(history: &HaqHistory, warmup: usize) -> String {
    let eps = &history.episodes;
    let n = eps.len().max(1) as f64;
    let ys: Vec<f64> = eps
        .iter()
        .map(|e| e.reward)
        .filter(|r| r.is_finite())
        .collect();
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
            (a.min(y), b.max(y))
        });
    if !y0.is_finite() {
        (y0, y1) = (-1.0, 0.0);
    }
    let d = if y1 > y0 { (y1 - y0) * 0.06 } else { 0.5 };
    let (y0, y1) = (y0 - d, y1 + d);
    let (x0, x1) = (0.0, (n - 1.0).max(1.0));
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let best = history
        .best_episode
        .and_then(|b| eps.get(b))
        .map_or(String::new(), |b| {
            format!(
                ", best {:.2}% at episode {} (FP {:.2}%)",
                b.accuracy, b.episode, history.fp_accuracy
            )
        });
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">HAQ learning curve: {} episodes{best}</text>"#,
        W / 2.0,
        eps.len()
    );
    let (bx, by) = (H - BOTTOM, W - RIGHT);
    let _ = writeln!(
        s,
        r#"<path d="M{LEFT} {TOP} V{bx} H{by}" fill="none" stroke="black"/>"#
    );
    // Episode ticks at a round step (1, 2 or 5 times a power of ten), about five of them.
    let raw = (x1 / 5.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&v| v >= raw)
        .unwrap_or(10.0 * mag);
    let mut xv = 0.0;
    while xv <= x1 + 1e-9 {
        let x = px(xv);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{bx}" x2="{x:.1}" y2="{}" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{xv}</text>"#,
            bx + 5.0,
            bx + 18.0,
        );
        xv += step;
    }
    for i in 0..=5 {
        let t = f64::from(i) / 5.0;
        let yv = y0 + t * (y1 - y0);
        let y = py(yv);
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="black"/><line x1="{LEFT}" y1="{y:.1}" x2="{by}" y2="{y:.1}" stroke="#eeeeee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 5.0,
            LEFT - 8.0,
            y + 4.0,
            tick(yv)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">episode</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0
    );
    let mid = (TOP + H - BOTTOM) / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="16" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 16 {mid:.1})">reward = λ·(accuracy − FP accuracy), accuracy in %</text>"#
    );
    if warmup > 0 && (warmup as f64) <= x1 {
        let x = px(warmup as f64 - 0.5);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bx}" stroke="#888888" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#666666">warm-up</text>"##,
            x - 4.0,
            TOP + 12.0
        );
    }
    for e in eps.iter().filter(|e| e.reward.is_finite()) {
        let colour = if e.episode < warmup {
            "#aaaaaa"
        } else {
            "#1f77b4"
        };
        let _ = writeln!(
            s,
            r#"<circle cx="{:.2}" cy="{:.2}" r="2" fill="{colour}"/>"#,
            px(e.episode as f64),
            py(e.reward)
        );
    }
    if let Some(first) = eps.first() {
        let mut d = format!(
            "M{:.2} {:.2}",
            px(first.episode as f64),
            py(first.best_reward)
        );
        for e in &eps[1..] {
            let _ = write!(d, " H{:.2} V{:.2}", px(e.episode as f64), py(e.best_reward));
        }
        let _ = writeln!(
            s,
            r##"<path d="{d}" fill="none" stroke="#d62728" stroke-width="1.5"/>"##
        );
    }
    // Legend.
    let lx = W - RIGHT - 170.0;
    let ly = bx - 52.0;
    let _ = writeln!(
        s,
        r##"<rect x="{lx}" y="{ly}" width="165" height="48" fill="white" stroke="#cccccc"/><circle cx="{}" cy="{}" r="3" fill="#aaaaaa"/><text x="{}" y="{}">warm-up (random)</text><circle cx="{}" cy="{}" r="3" fill="#1f77b4"/><text x="{}" y="{}">agent episode</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#d62728" stroke-width="1.5"/><text x="{}" y="{}">best so far</text>"##,
        lx + 10.0,
        ly + 10.0,
        lx + 20.0,
        ly + 14.0,
        lx + 10.0,
        ly + 24.0,
        lx + 20.0,
        ly + 28.0,
        lx + 4.0,
        ly + 38.0,
        lx + 16.0,
        ly + 38.0,
        lx + 20.0,
        ly + 42.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::haq::{HaqConfig, HaqEpisode, HaqSettings};

    fn episode(i: usize, reward: f64, best: f64) -> HaqEpisode {
        HaqEpisode {
            episode: i,
            actions: vec![0.5],
            proposed: vec![[8, 8]],
            bits: vec![[8, 8]],
            repaired: false,
            latency_ms: None,
            energy_mj: None,
            size_bytes: 0,
            avg_w_bits: 8.0,
            bops: 0.0,
            accuracy: 90.0 + reward * 10.0,
            reward,
            repeat: false,
            sigma: None,
            best_reward: best,
        }
    }

    #[test]
    fn curve_has_a_dot_per_episode_round_ticks_and_the_best_line() {
        let rewards = [-0.5, -0.2, -0.4, -0.1, -0.3, -0.05, -0.2];
        let mut best = f64::NEG_INFINITY;
        let episodes: Vec<HaqEpisode> = rewards
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                best = best.max(r);
                episode(i, r, best)
            })
            .collect();
        let h = HaqHistory {
            settings: HaqSettings {
                config: HaqConfig::default(),
                layers: vec!["fc".into()],
                constraints: serde_json::json!({}),
            },
            fp_accuracy: 95.0,
            steps_per_episode: 1,
            best_episode: Some(5),
            episodes,
        };
        let svg = learning_curve_svg(&h, 3);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // 7 episodes + 2 legend dots; 3 grey warm-up dots (+1 in the legend).
        assert_eq!(svg.matches("<circle").count(), 9);
        assert_eq!(svg.matches(r##"fill="#aaaaaa""##).count(), 4);
        assert!(svg.contains("best 89.50% at episode 5 (FP 95.00%)"));
        assert!(svg.contains(">warm-up<") && svg.contains("best so far"));
        for t in [">0<", ">2<", ">4<", ">6<"] {
            assert!(svg.contains(t), "tick {t}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
