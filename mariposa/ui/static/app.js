// The dashboard's own script: none inline (the Content-Security-Policy forbids it).
// Destructive buttons carry hx-confirm (htmx asks with the browser's own dialog); plain forms
// without htmx carry data-confirm, asked here; without JavaScript the server asks (ui/actions.py).
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  } else if (question && form.elements && form.elements.confirmed) {
    form.elements.confirmed.value = "1";  // asked here: the server need not ask again (ui/actions.py)
  }
});

// An action's refusal (403, 409, 422 ...) is a fragment with role="alert" (ui/actions.py): htmx
// swaps only 2xx answers by default, so forms marked data-swap-errors take their errors too.
document.addEventListener("htmx:beforeSwap", function (event) {
  var detail = event.detail;
  var elt = detail.requestConfig && detail.requestConfig.elt;
  if (detail.xhr && detail.xhr.status >= 400 && detail.xhr.status < 600 && elt && elt.closest &&
      elt.closest("[data-swap-errors]")) {
    detail.shouldSwap = true;
    detail.isError = false;
  }
});

// The manifest form (templates/manifest_form.html): a problem in #manifest-errors, chosen, puts
// the editor's cursor at its line and column and selects that line; the first one on load.
function mariposaShowProblem(item, focus) {
  var editor = document.getElementById("manifest");
  if (!editor || !item) { return; }
  var line = parseInt(item.getAttribute("data-line"), 10) || 1;
  var column = parseInt(item.getAttribute("data-column"), 10) || 1;
  var lines = editor.value.split("\n");
  var start = 0;
  for (var i = 0; i < line - 1 && i < lines.length; i++) { start += lines[i].length + 1; }
  var length = lines[line - 1] !== undefined ? lines[line - 1].length : 0;
  var at = start + Math.min(column - 1, length);
  if (focus) { editor.focus(); }
  editor.setSelectionRange(at, start + length);
  var height = editor.scrollHeight / Math.max(lines.length, 1);
  editor.scrollTop = Math.max(0, (line - 3) * height);
}
document.addEventListener("click", function (event) {
  var item = event.target.closest && event.target.closest("#manifest-errors li[data-line]");
  if (item) {
    event.preventDefault();
    mariposaShowProblem(item, true);
  }
});
document.addEventListener("DOMContentLoaded", function () {
  mariposaShowProblem(document.querySelector("#manifest-errors li[data-line]"), false);
});
