//! The report's layout, measured in Chromium: at a phone's width, whether any table or figure
//! is wider than its container, whether any box clips or scrolls its text, how small the
//! charts' text is drawn, whether the charts' series differ by dash or marker and by colour
//! in every colour vision; printed to PDF on A4, how many pages it takes.
//!
//! The page has no script of its own. A copy of it gets one that measures the rendered layout
//! and writes the figures into the DOM as JSON, which `--dump-dom` returns; the report itself
//! is never changed.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use serde::Deserialize;

use crate::chromium;
use parallax::report::charts::{self, DISTINCT};

/// The phone's width the report must fit, in CSS pixels.
pub const PHONE_WIDTH: u32 = 420;
/// The smallest chart text, in CSS pixels, at the phone's width.
pub const SMALLEST_CHART_TEXT: f64 = 10.0;

/// What the script measured, as it writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    /// The window's width, as the page saw it.
    pub viewport: f64,
    /// The document's width: more than the window's when the page scrolls sideways.
    pub page_width: f64,
    /// Tables, figures and images wider than their container's content box.
    pub overflowing: Vec<String>,
    /// Boxes whose content is wider or taller than they show (scrolled or hidden).
    pub clipped: Vec<String>,
    /// Each chart text's drawn size in CSS pixels, and the text.
    pub chart_text: Vec<(f64, String)>,
    /// Each legend sample's dash, marker and colour.
    pub series: Vec<(String, String, String)>,
    /// The engines the charts' legend names.
    #[serde(default)]
    pub engines: Vec<String>,
    /// The lines of the answer in words, as the page shows them.
    #[serde(default)]
    pub answer: Vec<String>,
}

/// The script that measures a page and writes [`Layout`] into it as JSON, in a `<pre>`.
const MEASURE: &str = r#"<script>
(() => {
  const out = { viewport: window.innerWidth, pageWidth: document.documentElement.scrollWidth,
    overflowing: [], clipped: [], chartText: [], series: [],
    engines: [...document.querySelectorAll('p.legend span.series')].map(s => s.textContent.trim()),
    answer: [...document.querySelectorAll('section.answer p.line')].map(p => p.textContent.trim()) };
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (typeof e.className === 'string' && e.className.trim() ? '.' + e.className.trim().split(/\s+/).join('.') : '');
  // Not in a closed <details>, not display: none.
  const shown = e => e.checkVisibility() && e.getClientRects().length > 0;
  for (const e of document.querySelectorAll('table, figure, img, pre, dl, svg')) {
    if (!shown(e) || (e.parentElement && e.parentElement.closest('svg'))) continue;
    const p = e.parentElement, style = getComputedStyle(p), box = p.getBoundingClientRect();
    const right = box.right - parseFloat(style.paddingRight) - parseFloat(style.borderRightWidth);
    const r = e.getBoundingClientRect();
    if (r.right > right + 0.5) out.overflowing.push(`${name(e)} ends ${Math.round(r.right - right)} px past ${name(p)}`);
  }
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('svg') || !shown(e)) continue;
    const style = getComputedStyle(e);
    const wide = style.overflowX !== 'visible' && e.scrollWidth > e.clientWidth + 1;
    const tall = style.overflowY !== 'visible' && e.scrollHeight > e.clientHeight + 1;
    if (wide || tall) out.clipped.push(`${name(e)} shows ${e.clientWidth}×${e.clientHeight} of ${e.scrollWidth}×${e.scrollHeight} px`);
  }
  for (const svg of document.querySelectorAll('figure svg[viewBox]')) {
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    for (const t of svg.querySelectorAll('text')) {
      const size = parseFloat(t.getAttribute('font-size') || getComputedStyle(t).fontSize);
      out.chartText.push([size * scale, t.textContent.trim()]);
    }
  }
  for (const s of document.querySelectorAll('svg.sample')) {
    const line = s.querySelector('line');
    out.series.push([s.dataset.dash || '', s.dataset.marker || '', line ? line.getAttribute('stroke') : '']);
  }
  // The page runs in a frame of the phone's width; the figures go to the frame's parent,
  // whose DOM Chromium dumps.
  const host = window.parent.document;
  const pre = host.createElement('pre');
  pre.id = 'parallax-layout';
  pre.textContent = JSON.stringify(out);
  host.body.appendChild(pre);
})();
</script>"#;

/// Measures `page` at `width` CSS pixels. Chromium's headless window is at least 500 px
/// wide, so the page, with the measuring script, runs in a frame of that width (a `srcdoc`
/// frame, of its parent's origin), on a page written in `work`.
pub fn measure(
    chromium_path: &Path,
    page: &Path,
    work: &Path,
    width: u32,
) -> anyhow::Result<Layout> {
    std::fs::create_dir_all(work)?;
    let html =
        std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    let at = html.rfind("</body>").unwrap_or(html.len());
    let measured = format!("{}{MEASURE}{}", &html[..at], &html[at..]);
    let copy = work.join(format!("{}-at-{width}px.html", stem(page)));
    std::fs::write(&copy, chromium::framed(&measured, width, 2400))?;
    let url = format!("file://{}", std::path::absolute(&copy)?.display());
    let output = chromium::run(
        {
            let mut command = chromium::command(chromium_path, width.max(800), 2400);
            command.arg("--dump-dom").arg(&url);
            command
        },
        &format!("measuring {}", page.display()),
    )?;
    ensure!(output.status.success(), "chromium could not render {url}");
    let dom = String::from_utf8_lossy(&output.stdout);
    let json = dom
        .split("<pre id=\"parallax-layout\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .with_context(|| format!("the measuring script left no figures in {url}"))?;
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).with_context(|| format!("reading the figures measured in {url}"))
}

/// `page` printed to PDF on A4 (the page's own `@page` rule), and the number of its pages.
pub fn printed_pages(
    chromium_path: &Path,
    page: &Path,
    work: &Path,
) -> anyhow::Result<(usize, PathBuf)> {
    std::fs::create_dir_all(work)?;
    let pdf = work.join(format!("{}.pdf", stem(page)));
    let _ = std::fs::remove_file(&pdf);
    let url = format!("file://{}", std::path::absolute(page)?.display());
    let output = chromium::run(
        {
            let mut command = chromium::command(chromium_path, 1280, 2400);
            command
                .arg("--no-pdf-header-footer")
                .arg(format!("--print-to-pdf={}", pdf.display()))
                .arg(&url);
            command
        },
        &format!("printing {}", page.display()),
    )?;
    ensure!(
        output.status.success() && pdf.is_file(),
        "chromium could not print {url} to PDF"
    );
    let bytes = std::fs::read(&pdf)?;
    Ok((page_count(&bytes), pdf))
}

/// `page` measured at the phone's width and printed: its layout, its number of A4 pages and
/// the PDF, the files in `work`.
pub fn at_phone_width_and_on_paper(
    chromium_path: &Path,
    page: &Path,
    work: &Path,
) -> anyhow::Result<(Layout, usize, PathBuf)> {
    let layout = measure(chromium_path, page, &work.join("layout"), PHONE_WIDTH)?;
    let (pages, pdf) = printed_pages(chromium_path, page, &work.join("print"))?;
    Ok((layout, pages, pdf))
}

/// The pages of a PDF: its `/Type /Page` objects (not the `/Pages` tree).
fn page_count(pdf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(pdf);
    text.match_indices("/Type")
        .filter(|(at, _)| {
            let rest = text[at + 5..].trim_start();
            rest.starts_with("/Page") && !rest.starts_with("/Pages")
        })
        .count()
}

/// The directory name a report's page is known by (`seeds` for `.../seeds/report.html`).
fn stem(page: &Path) -> String {
    page.parent()
        .and_then(|dir| dir.file_name())
        .map_or("page".into(), |name| name.to_string_lossy().into_owned())
}

/// What breaks the layout rules, one line each: overflow, clipping, chart text under
/// [`SMALLEST_CHART_TEXT`], series alike in dash and marker or in colour, more pages than
/// `most_pages`.
pub fn problems(layout: &Layout, pages: usize, most_pages: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if layout.page_width > layout.viewport + 0.5 {
        problems.push(format!(
            "the page is {} px wide at a {} px window: it scrolls sideways",
            layout.page_width, layout.viewport
        ));
    }
    problems.extend(layout.overflowing.iter().map(|o| format!("too wide: {o}")));
    problems.extend(layout.clipped.iter().map(|c| format!("clipped: {c}")));
    if let Some((size, text)) = layout.chart_text.iter().min_by(|a, b| a.0.total_cmp(&b.0))
        && *size < SMALLEST_CHART_TEXT
    {
        problems.push(format!(
            "chart text \"{text}\" is drawn at {size:.1} px, under {SMALLEST_CHART_TEXT} px"
        ));
    }
    for (i, a) in layout.series.iter().enumerate() {
        for b in &layout.series[i + 1..] {
            if a.0 == b.0 && a.1 == b.1 {
                problems.push(format!(
                    "two series share the dash {} and the marker {}",
                    a.0, a.1
                ));
            }
        }
    }
    let colours: Vec<(String, plotters::style::RGBColor)> = layout
        .series
        .iter()
        .filter_map(|(_, _, colour)| Some((colour.clone(), hex_colour(colour)?)))
        .collect();
    if colours.len() > 1 {
        let (smallest, between) = charts::smallest_difference(&colours);
        if smallest < DISTINCT {
            problems.push(format!(
                "series colours {between} differ by CIEDE2000 {smallest:.1}, under {DISTINCT}"
            ));
        }
    }
    // Every line of the answer names every engine the page compares.
    for line in &layout.answer {
        let missing: Vec<&str> = layout
            .engines
            .iter()
            .map(String::as_str)
            .filter(|engine| !line.contains(engine))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "the answer's line \"{line}\" does not name {}",
                missing.join(", ")
            ));
        }
    }
    if pages > most_pages {
        problems.push(format!(
            "printed, it takes {pages} A4 pages, more than {most_pages}"
        ));
    }
    problems
}

/// `#rrggbb` as a colour.
fn hex_colour(text: &str) -> Option<plotters::style::RGBColor> {
    let hex = text.strip_prefix('#').filter(|hex| hex.len() == 6)?;
    let channel = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).ok();
    Some(plotters::style::RGBColor(
        channel(0)?,
        channel(2)?,
        channel(4)?,
    ))
}

/// Reports of the sizes the rules are stated for, made from a real comparison's records in
/// `seeds_dir` and rendered as `cargo xtask report` renders them: its engines over one seed
/// (at most 4 pages), and the default set, six backends over five seeds, each backend's
/// records copied from one of the real engines' with its name and seed changed and its epochs
/// slower by a tenth per backend (at most 6 pages). Each is paired with its page limit.
pub fn sized_reports(seeds_dir: &Path, work: &Path) -> anyhow::Result<Vec<(PathBuf, usize)>> {
    use parallax_core::record::RunRecord;
    let mut records = Vec::new();
    for path in parallax::report::dir::json_files(&seeds_dir.join("records"))? {
        records.push(RunRecord::load(&path)?);
    }
    records.retain(|r| r.status == parallax_core::record::RunStatus::Complete);
    records.sort_by(|a, b| (a.seed, &a.backend).cmp(&(b.seed, &b.backend)));
    ensure!(
        !records.is_empty(),
        "{} holds no complete run record",
        seeds_dir.display()
    );
    let write = |name: &str, records: &[RunRecord]| -> anyhow::Result<PathBuf> {
        let dir = work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        for record in records {
            let path = dir
                .join("records")
                .join(&record.run.model)
                .join(&record.backend)
                .join(format!("seed-{}.json", record.seed));
            std::fs::create_dir_all(path.parent().context("a record's directory")?)?;
            record.save(&path)?;
        }
        parallax::report::dir::render_dir(&dir, None)?;
        Ok(dir.join("report.html"))
    };
    let first_seed = records[0].seed;
    let one_seed: Vec<RunRecord> = records
        .iter()
        .filter(|r| r.seed == first_seed)
        .cloned()
        .collect();
    let default_set: Vec<&str> = parallax_registry::BACKENDS
        .iter()
        .filter(|entry| entry.compared_by_default)
        .map(|entry| entry.name)
        .collect();
    let mut sized = Vec::new();
    for (index, backend) in default_set.iter().enumerate() {
        for seed in 1..=5_u64 {
            let source = &one_seed[index % one_seed.len()];
            let mut record = records
                .iter()
                .find(|r| r.backend == source.backend && r.seed == seed)
                .unwrap_or(source)
                .clone();
            record.backend = (*backend).to_string();
            record.run.backend = record.backend.clone();
            record.seed = seed;
            record.run.seed = seed;
            let slower = 1.0 + 0.1 * index as f64;
            for epoch in &mut record.epochs {
                epoch.seconds *= slower;
                epoch.elapsed_training_seconds *= slower;
            }
            record.median_epoch_seconds *= slower;
            sized.push(record);
        }
    }
    Ok(vec![
        (write("engines-one-seed", &one_seed)?, 4),
        (write("default-set", &sized)?, 6),
    ])
}

/// A page that breaks every layout rule, for the checks to catch: a table wider than the
/// phone, a box that scrolls, a chart whose text shrinks to a few pixels, two series alike in
/// dash, marker and colour, an answer that forgets an engine, and some twenty printed pages.
pub const DELIBERATELY_BAD: &str = concat!(
    "<!DOCTYPE html><html><head><title>bad</title></head><body>",
    "<table><tr><td style=\"white-space:nowrap\">a cell far wider than any phone, a cell far wider than any phone, a cell far wider than any phone</td></tr></table>",
    "<div style=\"overflow-x:auto;width:200px\"><p style=\"width:600px\">text that scrolls in its box</p></div>",
    "<figure><svg viewBox=\"0 0 4000 400\" width=\"100%\"><text x=\"10\" y=\"200\" font-size=\"16\">tiny</text></svg></figure>",
    "<svg class=\"sample\" data-dash=\"solid\" data-marker=\"Disc\"><line stroke=\"#0072b2\"/></svg>",
    "<svg class=\"sample\" data-dash=\"solid\" data-marker=\"Disc\"><line stroke=\"#0073b2\"/></svg>",
    "<p class=\"legend\"><span class=\"series\">tch</span><span class=\"series\">tf</span></p>",
    "<section class=\"answer\"><p class=\"line\">Speed: tch fastest.</p></section>",
    "<div style=\"height:6000mm\">a long page</div>",
    "</body></html>"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_counted_without_the_page_tree() {
        let pdf = b"<< /Type /Pages /Kids [3 0 R 4 0 R] >> << /Type /Page /Parent 2 0 R >> <</Type/Page>>";
        assert_eq!(page_count(pdf), 2);
    }

    #[test]
    fn each_rule_is_a_problem_of_its_own() {
        let layout = Layout {
            viewport: 420.0,
            page_width: 600.0,
            overflowing: vec!["table ends 180 px past body".into()],
            clipped: vec!["div shows 200×20 of 600×20 px".into()],
            chart_text: vec![(4.0, "tiny".into()), (12.0, "fine".into())],
            series: vec![
                ("solid".into(), "Disc".into(), "#0072b2".into()),
                ("solid".into(), "Disc".into(), "#0073b2".into()),
            ],
            engines: vec!["tch".into(), "tf".into()],
            answer: vec!["Speed: tch fastest.".into()],
        };
        let problems = problems(&layout, 9, 6);
        for expected in [
            "scrolls sideways",
            "too wide",
            "clipped",
            "\"tiny\" is drawn at 4.0 px",
            "share the dash",
            "CIEDE2000",
            "9 A4 pages",
            "does not name tf",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:#?}"
            );
        }
        assert!(super::problems(&Layout::default(), 1, 4).is_empty());
    }
}
