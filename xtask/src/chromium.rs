//! Headless Chromium, as the browser test and `cargo xtask report --screenshots` run it:
//! offline (a proxy on a closed port), without the browser's own background services, and
//! within a time limit, so that a page that never finishes cannot hang a command.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// How long one Chromium run may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Chromium's headless window is never narrower than this; a narrower page runs in a frame.
const NARROWEST_WINDOW: u32 = 500;

/// Chromium with the flags of an offline, quiet, headless run in a window of `width` ×
/// `height` CSS pixels; the caller adds what to do (`--dump-dom`, `--screenshot=`...) and the
/// URL.
pub fn command(chromium: &Path, width: u32, height: u32) -> Command {
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--proxy-server=127.0.0.1:9",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--virtual-time-budget=5000",
    ]);
    command.arg(format!("--window-size={width},{height}"));
    command
}

/// Runs `command` to its end or for [`LIMIT`], whichever comes first; `what` names it in the
/// error.
pub fn run(mut command: Command, what: &str) -> anyhow::Result<Output> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting chromium for {what}"))?;
    let id = child.id();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match receive.recv_timeout(LIMIT) {
        Ok(output) => Ok(output?),
        Err(_) => {
            // The child is still running and is ours alone: stop it, then say what hung.
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            bail!(
                "chromium did not finish {what} within {} s",
                LIMIT.as_secs()
            )
        }
    }
}

/// A page that shows `html` in a frame `width` × `height` CSS pixels, for widths under
/// Chromium's narrowest window. The frame is a `srcdoc` one, of its parent's origin, so a
/// script in it can write to the parent.
pub fn framed(html: &str, width: u32, height: u32) -> String {
    let frame = html.replace('&', "&amp;").replace('"', "&quot;");
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body style=\"margin:0\"><iframe style=\"width:{width}px;height:{height}px;border:0\" srcdoc=\"{frame}\"></iframe></body></html>"
    )
}

/// A PNG of the top `height` CSS pixels of `page` at `width`; a width under Chromium's
/// narrowest window is shown in a frame of that width, written beside the PNG.
pub fn screenshot(
    chromium: &Path,
    page: &Path,
    png: &Path,
    width: u32,
    height: u32,
) -> anyhow::Result<()> {
    let page = std::path::absolute(page)?;
    let (url, window) = if width < NARROWEST_WINDOW {
        let html = std::fs::read_to_string(&page)
            .with_context(|| format!("reading {}", page.display()))?;
        let frame = png.with_extension("framed.html");
        std::fs::write(&frame, framed(&html, width, height))?;
        (
            format!("file://{}", std::path::absolute(&frame)?.display()),
            NARROWEST_WINDOW,
        )
    } else {
        (format!("file://{}", page.display()), width)
    };
    let _ = std::fs::remove_file(png);
    let mut shot = command(chromium, window, height);
    shot.arg(format!(
        "--screenshot={}",
        std::path::absolute(png)?.display()
    ))
    .arg(&url);
    let output = run(shot, &format!("a screenshot of {}", page.display()))?;
    ensure!(
        output.status.success() && png.is_file(),
        "chromium could not screenshot {url}"
    );
    if width < NARROWEST_WINDOW {
        let _ = std::fs::remove_file(png.with_extension("framed.html"));
        // The window is wider than the frame: keep the frame's columns only.
        let image = image::open(png)
            .with_context(|| format!("reading {}", png.display()))?
            .crop_imm(0, 0, width, height);
        image
            .save(png)
            .with_context(|| format!("writing {}", png.display()))?;
    }
    Ok(())
}
