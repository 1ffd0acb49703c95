// Filters for the tables of `harness view`: selects (data-filter) and a search box (data-search) narrow a table's
// rows; the page's #hash (e.g. #method=Bridge&outcome=invalid&q=refund) sets them on load. No network, no library.
(function () {
  "use strict";
  var COLUMNS = ["item", "seed", "method", "class", "input", "output", "answer", "outcome", "note"];

  function fillFromData(table) {
    var source = document.getElementById(table.dataset.source);
    if (!source) return;
    var rows = JSON.parse(source.textContent), body = table.tBodies[0], frag = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      COLUMNS.forEach(function (key) {
        var td = document.createElement("td"), value = row[key];
        td.textContent = value === null || value === undefined ? "" : String(value);
        if (key === "outcome") td.className = "o-" + td.textContent;
        tr.appendChild(td);
        if (["method", "outcome", "class", "seed"].indexOf(key) >= 0) tr.dataset[key] = td.textContent;
      });
      frag.appendChild(tr);
    });
    body.appendChild(frag);
  }

  function apply(table) {
    var selects = document.querySelectorAll('select[data-table="' + table.id + '"]');
    var search = document.querySelector('input[data-search="' + table.id + '"]');
    var query = search ? search.value.toLowerCase() : "", shown = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i], keep = true;
      selects.forEach(function (select) {
        if (select.value && row.dataset[select.dataset.filter] !== select.value) keep = false;
      });
      if (keep && query && row.textContent.toLowerCase().indexOf(query) < 0) keep = false;
      row.classList.toggle("hidden", !keep);
      if (keep) shown++;
    }
    var count = document.querySelector('[data-count="' + table.id + '"]');
    if (count) count.textContent = shown + " of " + rows.length + " rows";
  }

  function fromHash() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv[0]) state[decodeURIComponent(kv[0])] = decodeURIComponent((kv[1] || "").replace(/\+/g, " "));
    });
    return state;
  }

  document.querySelectorAll("table[data-source]").forEach(fillFromData);
  var tables = document.querySelectorAll("table.data[id]"), state = fromHash();
  tables.forEach(function (table) {
    document.querySelectorAll('select[data-table="' + table.id + '"]').forEach(function (select) {
      if (state[select.dataset.filter] !== undefined) select.value = state[select.dataset.filter];
      select.addEventListener("change", function () { apply(table); });
    });
    var search = document.querySelector('input[data-search="' + table.id + '"]');
    if (search) {
      if (state.q !== undefined) search.value = state.q;
      search.addEventListener("input", function () { apply(table); });
    }
    apply(table);
  });
})();
