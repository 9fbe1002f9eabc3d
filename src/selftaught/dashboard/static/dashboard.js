// selftaught dashboard: live regions and sortable tables. Loaded from the package; the CSP allows no other script.
// Nothing here turns text into markup: new regions come from the server already escaped, and are parsed
// into inert nodes (DOMParser never runs scripts) before they replace the old ones.
"use strict";

(function () {
  const POLL_MS = 1000;

  function note(region, text) {
    const element = region.querySelector(".live-note");
    if (element) element.textContent = text;
  }

  async function refresh(state) {
    const region = state.region;
    const answer = await fetch(region.dataset.liveVersion, { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) {
      note(region, "the store cannot be read right now; retrying");
      return;
    }
    const { version } = await answer.json();
    if (version === state.version) return;
    const page = await fetch(region.dataset.liveFragment, { cache: "no-store", credentials: "same-origin" });
    if (!page.ok) {
      note(region, "the store changed but this part cannot be shown again (HTTP " + page.status + "); retrying");
      return;
    }
    const parsed = new DOMParser().parseFromString(await page.text(), "text/html");
    const fresh = parsed.getElementById(region.id);
    if (!fresh) {
      note(region, "the store changed but this part cannot be shown again; retrying");
      return;
    }
    const adopted = document.importNode(fresh, true);
    carryOver(region, adopted);
    region.replaceWith(adopted);
    state.region = adopted;
    state.version = adopted.dataset.version;
    note(adopted, "updated " + new Date().toLocaleTimeString());
  }

  // What the reader did to the old region and the new one must keep: boxes ticked, a table's sort.
  function carryOver(old, fresh) {
    for (const box of old.querySelectorAll("input[type=checkbox]:checked")) {
      for (const twin of fresh.querySelectorAll("input[type=checkbox]")) {
        if (twin.name === box.name && twin.value === box.value) twin.checked = true;
      }
    }
    for (const header of old.querySelectorAll("table.sortable[id] th[aria-sort]")) {
      const table = fresh.querySelector("#" + CSS.escape(header.closest("table").id));
      const index = Array.prototype.indexOf.call(header.parentElement.children, header);
      const twin = table && table.tHead ? table.tHead.rows[0].cells[index] : null;
      if (!twin) continue;
      sortBy(twin);  // ascending first
      if (header.getAttribute("aria-sort") === "descending") sortBy(twin);
    }
  }

  function watch(region) {
    const state = { region: region, version: region.dataset.version, busy: false };
    window.setInterval(async function () {
      if (state.busy || document.hidden) return;
      state.busy = true;
      try {
        await refresh(state);
      } catch (error) {
        note(state.region, "dashboard unreachable; retrying");
      } finally {
        state.busy = false;
      }
    }, POLL_MS);
  }

  function cellValue(row, index) {
    const cell = row.cells[index];
    const text = cell ? cell.textContent.trim() : "";
    const number = Number.parseFloat(text.replace(/^\$/, ""));
    return Number.isNaN(number) || !/^[-$\d.]/.test(text) ? text.toLowerCase() : number;
  }

  function sortBy(header) {
    const table = header.closest("table");
    const index = Array.prototype.indexOf.call(header.parentElement.children, header);
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    for (const other of header.parentElement.children) other.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = cellValue(a, index), y = cellValue(b, index);
      const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === "number" ? -1 : 1;
      return ascending ? order : -order;
    });
    for (const row of rows) body.appendChild(row);
  }

  document.addEventListener("click", function (event) {
    const header = event.target.closest("table.sortable thead th");
    if (header) sortBy(header);
  });

  document.addEventListener("DOMContentLoaded", function () {
    for (const region of document.querySelectorAll("[data-live-version]")) watch(region);
  });
})();
