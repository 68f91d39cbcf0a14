//! The HTML report in a real browser: headless Chromium renders the reports that the earlier
//! phases' real runs wrote, and the phase checks that each page fetched nothing, logged
//! nothing to the console, holds its charts and sections in the rendered DOM, and is not a
//! blank screenshot. A page made to break every rule must fail each check, so that the
//! checks themselves are known to work.
//!
//! Chromium runs offline on purpose (`--proxy-server` to a closed port) with its own
//! background services off; a network log (`--log-net-log`) records every request, and the
//! page's own requests are told from the browser's by their initiator.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use parallax::report::html::remote_attributes;

/// What the browser made of one page.
#[derive(Debug)]
pub struct Rendered {
    /// Requests the page made for anything that is not a `file:` or `data:` URL.
    pub requests: Vec<String>,
    /// Console messages (the report has no script, so any message is an error).
    pub console: Vec<String>,
    /// `src` and `href` attributes of the HTML that name an `http:` or `https:` URL.
    pub remote_attributes: Vec<String>,
    /// The DOM after rendering.
    pub dom: String,
    /// The screenshot.
    pub screenshot: PathBuf,
    /// The share of the screenshot's pixels that are not white.
    pub ink: f64,
    /// Distinct colours in the screenshot.
    pub colours: usize,
}

/// The window the pages are rendered in: a desktop's width, and tall enough for the top of
/// every section.
fn chromium(chromium: &Path) -> Command {
    crate::chromium::command(chromium, 1280, 2400)
}

/// The page's own requests in a Chromium network log: requests whose initiator is a page
/// (the browser's own say "not an origin"), for URLs other than `file:` and `data:`.
fn page_requests(net_log: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(net_log)
        .with_context(|| format!("reading the network log {}", net_log.display()))?;
    // Chromium may leave the log's closing brackets off when it exits at once.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .with_context(|| format!("parsing the network log {}", net_log.display()))?;
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .context("the network log names no URL_REQUEST_START_JOB event")?;
    let mut requests = Vec::new();
    for event in log["events"].as_array().into_iter().flatten() {
        if event["type"].as_u64() != Some(start_job) {
            continue;
        }
        let params = &event["params"];
        let Some(url) = params["url"].as_str() else {
            continue;
        };
        let by_the_page = params["initiator"].as_str() != Some("not an origin");
        let local = url.starts_with("file:") || url.starts_with("data:");
        if by_the_page && !local && !requests.iter().any(|known| known == url) {
            requests.push(url.to_string());
        }
    }
    Ok(requests)
}

/// The share of non-white pixels and the number of distinct colours of a PNG.
fn ink(png: &Path) -> anyhow::Result<(f64, usize)> {
    let image = image::open(png)
        .with_context(|| format!("reading the screenshot {}", png.display()))?
        .to_rgb8();
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0usize;
    for pixel in image.pixels() {
        if pixel.0.iter().any(|&channel| channel < 245) {
            inked += 1;
        }
        if colours.len() < 100_000 {
            colours.insert(pixel.0);
        }
    }
    let total = (image.width() as usize * image.height() as usize).max(1);
    Ok((inked as f64 / total as f64, colours.len()))
}

/// Renders `page` in headless Chromium: a screenshot with the network and console logged,
/// then the DOM.
pub fn render(chromium_path: &Path, page: &Path, work: &Path) -> anyhow::Result<Rendered> {
    std::fs::create_dir_all(work)?;
    let page = std::path::absolute(page)?;
    let url = format!("file://{}", page.display());
    let stem = page
        .parent()
        .and_then(|dir| dir.file_name())
        .map_or("page".into(), |name| name.to_string_lossy().into_owned());
    let screenshot = work.join(format!("{stem}.png"));
    let net_log = work.join(format!("{stem}.netlog.json"));
    let _ = std::fs::remove_file(&screenshot);
    let mut shot = chromium(chromium_path);
    shot.arg(format!("--log-net-log={}", net_log.display()))
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url);
    let shot = crate::chromium::run(shot, &format!("a screenshot of {url}"))?;
    let stderr = String::from_utf8_lossy(&shot.stderr);
    ensure!(
        shot.status.success() && screenshot.is_file(),
        "chromium could not screenshot {url}: {}",
        stderr.lines().last().unwrap_or("")
    );
    let console = stderr
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let mut dump = chromium(chromium_path);
    dump.arg("--dump-dom").arg(&url);
    let dump = crate::chromium::run(dump, &format!("rendering {url}"))?;
    ensure!(dump.status.success(), "chromium could not render {url}");
    let html = std::fs::read_to_string(&page)?;
    let (ink, colours) = ink(&screenshot)?;
    Ok(Rendered {
        requests: page_requests(&net_log)?,
        console,
        remote_attributes: remote_attributes(&html),
        dom: String::from_utf8_lossy(&dump.stdout).into_owned(),
        screenshot,
        ink,
        colours,
    })
}

/// What is wrong with a rendered page: requests, console messages, remote URLs, elements
/// missing from the DOM (each given as a fragment of markup, such as `id="chart-loss"`), and
/// a blank screenshot.
pub fn problems(rendered: &Rendered, expected: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(
        rendered
            .requests
            .iter()
            .map(|url| format!("the page requested {url}")),
    );
    problems.extend(
        rendered
            .console
            .iter()
            .map(|line| format!("console: {line}")),
    );
    problems.extend(
        rendered
            .remote_attributes
            .iter()
            .map(|attribute| format!("a remote URL in {attribute}")),
    );
    for fragment in expected {
        if !rendered.dom.contains(fragment) {
            problems.push(format!("the rendered DOM lacks {fragment}"));
        }
    }
    // Sections named by id must come in the order given: the answer first.
    let positions: Vec<(&str, usize)> = expected
        .iter()
        .filter(|fragment| fragment.starts_with("id="))
        .filter_map(|fragment| Some((*fragment, rendered.dom.find(fragment)?)))
        .collect();
    for pair in positions.windows(2) {
        if pair[1].1 < pair[0].1 {
            problems.push(format!("{} comes before {}", pair[1].0, pair[0].0));
        }
    }
    if rendered.ink < 0.02 || rendered.colours < 16 {
        problems.push(format!(
            "the screenshot {} looks blank: {:.1}% of its pixels are not white, {} colours",
            rendered.screenshot.display(),
            100.0 * rendered.ink,
            rendered.colours
        ));
    }
    problems
}

/// The markup every comparison's page must hold once rendered, the sections (`id=`) in the
/// order the report promises them: the answer in words first.
pub const COMPARISON: &[&str] = &[
    "id=\"answer\"",
    "id=\"verdicts\"",
    "id=\"chart-time-to-accuracy\"",
    "id=\"chart-loss\"",
    "id=\"chart-epoch-seconds\"",
    "id=\"chart-peak-memory\"",
    "id=\"chart-first-step\"",
    "id=\"heatmaps\"",
    "id=\"ledger\"",
    "id=\"environment\"",
    "<svg",
    "class=\"heat confusion\"",
];

/// Checks `pages` (each with the markup it must hold) and a page built to fail; screenshots
/// are left in `work`.
pub fn acceptance(
    chromium_path: &Path,
    pages: &[(PathBuf, Vec<&str>)],
    work: &Path,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (page, expected) in pages {
        let rendered = render(chromium_path, page, work)?;
        let found = problems(&rendered, expected);
        // Each chart must be an SVG inside its figure, not only an empty figure.
        let charts = rendered.dom.matches("<figure class=\"chart").count();
        let svgs_in_charts = rendered
            .dom
            .split("<figure class=\"chart")
            .skip(1)
            .filter(|figure| {
                figure
                    .split("</figure>")
                    .next()
                    .is_some_and(|inside| inside.contains("<svg"))
            })
            .count();
        eprintln!(
            "browser: {}: {} charts drawn of {charts}, {:.1}% of the screenshot inked, {} colours, {} requests, {} console messages; screenshot {}",
            page.display(),
            svgs_in_charts,
            100.0 * rendered.ink,
            rendered.colours,
            rendered.requests.len(),
            rendered.console.len(),
            rendered.screenshot.display()
        );
        if svgs_in_charts < charts {
            failures.push(format!(
                "{}: {} of {charts} charts hold no SVG",
                page.display(),
                charts - svgs_in_charts
            ));
        }
        failures.extend(
            found
                .into_iter()
                .map(|problem| format!("{}: {problem}", page.display())),
        );
    }
    // The layout, at a phone's width and printed: the comparison's own page, and pages of the
    // sizes the rules name, made from its records.
    let comparison = pages
        .iter()
        .find(|(_, expected)| {
            expected
                .iter()
                .any(|fragment| fragment.contains("id=\"answer\""))
        })
        .map(|(page, _)| page.clone());
    if let Some(comparison) = comparison {
        let seeds_dir = comparison.parent().context("the comparison's directory")?;
        let mut sized = vec![(comparison.clone(), 6)];
        sized.extend(super::layout::sized_reports(
            seeds_dir,
            &work.join("sized"),
        )?);
        for (page, most_pages) in sized {
            let (layout, printed, pdf) =
                super::layout::at_phone_width_and_on_paper(chromium_path, &page, work)?;
            let smallest = layout
                .chart_text
                .iter()
                .map(|(size, _)| *size)
                .fold(f64::INFINITY, f64::min);
            eprintln!(
                "browser: {} at {} px: {} overflowing, {} clipped, chart text at least {smallest:.1} px, {} series, {} answer lines for {} engines; printed {printed} A4 pages (at most {most_pages}): {}",
                page.display(),
                super::layout::PHONE_WIDTH,
                layout.overflowing.len(),
                layout.clipped.len(),
                layout.series.len(),
                layout.answer.len(),
                layout.engines.len(),
                pdf.display()
            );
            // An answer of no lines, or a page without engines, would pass the naming check.
            if layout.answer.is_empty() || layout.engines.is_empty() {
                failures.push(format!(
                    "{}: the measured page shows no answer lines or no engines",
                    page.display()
                ));
            }
            failures.extend(
                super::layout::problems(&layout, printed, most_pages)
                    .into_iter()
                    .map(|problem| format!("{}: {problem}", page.display())),
            );
        }
    }
    // The checks must catch a page that breaks each rule.
    let bad_dir = work.join("deliberately-bad");
    std::fs::create_dir_all(&bad_dir)?;
    let bad = bad_dir.join("report.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><head><title>bad</title></head><body><img src=\"http://192.0.2.1/chart.png\"><script>console.error('deliberate')</script></body></html>",
    )?;
    let rendered = render(chromium_path, &bad, work)?;
    let caught = problems(&rendered, &["id=\"verdicts\""]);
    let expected_catches = [
        "the page requested",
        "console:",
        "a remote URL",
        "lacks id=",
        "looks blank",
    ];
    for catch in expected_catches {
        if !caught.iter().any(|problem| problem.contains(catch)) {
            failures.push(format!(
                "the deliberately bad page was not caught by the check `{catch}`: {caught:?}"
            ));
        }
    }
    let bad_layout = bad_dir.join("layout").join("report.html");
    std::fs::create_dir_all(bad_layout.parent().context("a directory")?)?;
    std::fs::write(&bad_layout, super::layout::DELIBERATELY_BAD)?;
    let (layout, printed, _) =
        super::layout::at_phone_width_and_on_paper(chromium_path, &bad_layout, work)?;
    let caught = super::layout::problems(&layout, printed, 6);
    for catch in [
        "scrolls sideways",
        "too wide",
        "clipped",
        "chart text",
        "share the dash",
        "CIEDE2000",
        "does not name",
        "A4 pages",
    ] {
        if !caught.iter().any(|problem| problem.contains(catch)) {
            failures.push(format!(
                "the deliberately bad layout was not caught by the check `{catch}`: {caught:?}"
            ));
        }
    }
    if !failures.is_empty() {
        bail!("the HTML report in Chromium: {}", failures.join("; "));
    }
    Ok(())
}
