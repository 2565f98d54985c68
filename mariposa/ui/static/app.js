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
