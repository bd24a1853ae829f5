"""``diff2lip serve``: an HTTP job API and a browser page over one durable job queue (``pip install -e
".[web]"``). :mod:`~diff2lip.serve.jobs` is the queue, :mod:`~diff2lip.serve.worker` runs jobs,
:mod:`~diff2lip.serve.app` the API, :mod:`~diff2lip.serve.ui` the page."""
