// auditcam report: sort and filter tables, filter the gallery. Reads only the page itself
// (data-* attributes and text); writes only classes, attributes and text, never HTML.
"use strict";
(function () {
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };

  // -- sortable tables: <table class="sortable">, a <button class="sort"> in each sortable <th>;
  // a cell's data-sort holds its number ("" = missing, sorted last), else its text is compared
  function key(cell) {
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (raw !== null) { return raw === "" ? null : Number(raw); }
    return cell.textContent.trim();
  }
  function compare(a, b, direction) {
    if (a === null || b === null) { return a === b ? 0 : (a === null ? 1 : -1); }
    if (typeof a === "number" && typeof b === "number") { return direction * (a - b); }
    return direction * String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
  }
  function sortTable(table, th) {
    var index = th.cellIndex;
    var direction = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    each(th.parentNode.cells, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) { return compare(key(r.cells[index]), key(s.cells[index]), direction); });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  each(document.querySelectorAll("table.sortable"), function (table) {
    each(table.querySelectorAll("thead th button.sort"), function (button) {
      var th = button.closest("th");
      button.addEventListener("click", function () { sortTable(table, th); });
    });
  });

  // -- filter boxes: <input class="table-filter"> in a .table-block hides rows without the text
  each(document.querySelectorAll(".table-block"), function (block) {
    var input = block.querySelector("input.table-filter");
    var table = block.querySelector("table");
    var count = block.querySelector(".filter-count");
    if (!input || !table) { return; }
    input.addEventListener("input", function () {
      var wanted = input.value.trim().toLowerCase();
      var shown = 0;
      each(table.tBodies[0].rows, function (row) {
        var hit = !wanted || row.textContent.toLowerCase().indexOf(wanted) !== -1;
        row.hidden = !hit;
        if (hit) { shown += 1; }
      });
      if (count) { count.textContent = wanted ? shown + " of " + table.tBodies[0].rows.length + " rows" : ""; }
    });
  });

  // -- gallery filters: <select data-key="k"> in a .gallery-block shows the cards whose
  // data-k equals the chosen value ("" = any)
  each(document.querySelectorAll(".gallery-block"), function (block) {
    var selects = block.querySelectorAll("select[data-key]");
    var cards = block.querySelectorAll(".card");
    var count = block.querySelector(".filter-count");
    function apply() {
      var shown = 0;
      each(cards, function (card) {
        var hit = true;
        each(selects, function (select) {
          if (select.value !== "" && card.getAttribute("data-" + select.getAttribute("data-key")) !== select.value) {
            hit = false;
          }
        });
        card.hidden = !hit;
        if (hit) { shown += 1; }
      });
      if (count) { count.textContent = shown + " of " + cards.length + " shown"; }
    }
    each(selects, function (select) { select.addEventListener("change", apply); });
  });

  document.documentElement.classList.add("js");
})();
