// Shared by every dashboard page (loaded deferred by base.html; no inline script under the CSP).
//
// - <time datetime="ISO 8601" data-format="datetime|date|time">readable UTC</time>: rewritten with
//   Intl.DateTimeFormat in the browser's locale and time zone; the full date, time and zone go in its
//   title. Without this script the server's UTC text stays.
// - <input type="hidden" data-timezone>: gets the browser's IANA time zone (a filter form sends it as
//   `tz`); [data-timezone-name] shows that zone.
// - <form method="get" data-compact>: empty fields are left out of the URL it goes to.
// Pages that add <time> elements later call window.callrecDashboard.formatTimes(element).
(() => {
  "use strict";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const styles = {
    datetime: { dateStyle: "medium", timeStyle: "short" },
    date: { dateStyle: "medium" },
    time: { timeStyle: "medium" },
  };
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

  function formatTimes(root) {
    for (const el of root.querySelectorAll("time[datetime][data-format]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(when.getTime())) continue;
      el.textContent = new Intl.DateTimeFormat(undefined, styles[el.dataset.format] || styles.datetime).format(when);
      el.title = full.format(when);
    }
  }

  function fillTimeZone(root) {
    for (const input of root.querySelectorAll("input[data-timezone]")) input.value = zone;
    for (const el of root.querySelectorAll("[data-timezone-name]")) el.textContent = zone.replaceAll("_", " ");
  }

  for (const form of document.querySelectorAll("form[data-compact]")) {
    form.addEventListener("submit", () => {
      for (const field of form.elements) if (field.name && !field.value) field.disabled = true;
      // re-enabled after the page is left, for the back button's cached copy
      setTimeout(() => { for (const field of form.elements) field.disabled = false; }, 0);
    });
  }

  window.callrecDashboard = { formatTimes, timeZone: zone };
  formatTimes(document);
  fillTimeZone(document);
})();
