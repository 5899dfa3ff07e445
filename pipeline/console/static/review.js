/* reid console: keyboard review. Each shortcut is an element of the page marked data-key="KEY"
   (a link to follow, a button to click, a reason to choose, a field to enter); the page shows them.
   Nothing fires while the operator types in a field (Esc leaves it) or holds a modifier key.
   Every action is also a plain link or button: the pages work without this script. */
(function () {
  "use strict";
  var leaving = false;  // a key already followed a link or pressed a button: one verdict per key press

  window.addEventListener("pageshow", function () {  // back to this page (the browser's back button)
    leaving = false;
  });

  function typing(el) {
    return el && (el.isContentEditable || el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
  }

  function act(el) {
    if (el.tagName === "OPTION") {  // a reason: chosen, not submitted
      el.selected = true;
      return;
    }
    if (el.tagName === "INPUT" || el.tagName === "SELECT") {
      el.focus();
      return;
    }
    var needs = el.dataset.needs && el.form && el.form.elements[el.dataset.needs];
    if (needs && !needs.value) {  // dismissing needs a reason: go to the list of reasons instead
      needs.focus();
      return;
    }
    leaving = true;
    el.click();
  }

  document.addEventListener("keydown", function (event) {
    if (leaving || event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented || event.repeat) {
      return;
    }
    if (typing(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    var el = document.querySelector('[data-key="' + CSS.escape(event.key) + '"]');
    if (el) {
      event.preventDefault();
      act(el);
    }
  });

  document.addEventListener("change", function (event) {  // a list's "tick every alert of the page"
    var name = event.target.dataset && event.target.dataset.selectAll;
    if (name) {
      document.querySelectorAll('input[type="checkbox"][name="' + CSS.escape(name) + '"]').forEach(function (box) {
        box.checked = event.target.checked;
      });
    }
  });
})();
