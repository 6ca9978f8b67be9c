// The call page: the copy-link button, the player, and a page that
// updates itself while the call or its recording is still in progress.
//
// Updating: a small poll of /dashboard/calls/{id}/state.json (every 2 s, slowing to 30 s), not a
// <meta http-equiv="refresh">. The meta refresh would pass the CSP, but it reloads the whole page
// (scroll position, focus and anything typed are lost, a screen reader starts reading the page again),
// and it cannot say politely what changed. The poll stops once the call and its recording have settled;
// when the state changes, the sections marked data-live are replaced from a fresh copy of the page and
// the change is announced in the page's status region (role=status, polite).
import { initPlayer } from "./player.js";

const page = document.getElementById("call-page");
const pageStatus = document.getElementById("page-status");
const nonce = document.querySelector('script[src$="/call.js"]')?.nonce ?? "";
const say = (text) => { pageStatus.textContent = text; };

// Times: <time data-format> elements are put in the viewer's timezone by the shared dashboard.js.
const localTimes = (root) => window.callrecDashboard?.formatTimes(root);

function copyLink() {
  const button = document.getElementById("copy-link");
  if (!button) return;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(button.dataset.link);
      say("Link copied.");
    } catch {
      // No Clipboard API (an insecure origin, or permission refused): show the link, selected.
      const field = document.getElementById("call-link");
      document.getElementById("call-link-label").hidden = false;
      field.hidden = false;
      field.focus();
      field.select();
      say("Copying is not available here: the link is shown and selected, copy it with Ctrl+C or ⌘C.");
    }
  });
}

async function refresh() {
  const response = await fetch(location.href, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) return false;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const next = fresh.getElementById("call-page");
  if (!next) return false;
  for (const section of page.querySelectorAll("section[data-live]")) {
    if (!next.querySelector(`#${section.id}`)) section.remove();
  }
  for (const section of next.querySelectorAll("section[data-live]")) {
    const copy = document.importNode(section, true);
    const current = document.getElementById(section.id);
    const before = section.previousElementSibling && document.getElementById(section.previousElementSibling.id);
    if (current) current.replaceWith(copy);
    else if (before) before.after(copy);
  }
  page.dataset.state = next.dataset.state;
  page.dataset.settled = next.dataset.settled;
  document.title = fresh.title;
  localTimes(page);
  initPlayer(document.getElementById("recording"), { nonce });
  return true;
}

function poll(delay) {
  setTimeout(async () => {
    try {
      const response = await fetch(page.dataset.stateUrl, { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) {
        say("Your session has ended, so this page no longer updates. Sign in again to see the latest.");
        return;
      }
      if (response.ok) {
        const state = await response.json();
        const settledNow = state.settled && page.dataset.settled !== "true";
        if ((state.state !== page.dataset.state || settledNow) && (await refresh())) say(state.announcement);
        if (state.settled && page.dataset.settled === "true") return;
      }
    } catch {
      // Offline for a moment: try again later.
    }
    poll(Math.min(delay * 1.5, 30000));
  }, delay);
}

copyLink();
initPlayer(document.getElementById("recording"), { nonce });
if (page.dataset.settled !== "true") poll(2000);
