// An echo app on Express 4 for keyhole's upstream tests.
// Usage: node echo.js PORT
// Each request is answered with JSON of the route Express matched (Express
// routes case-insensitively and ignores a trailing slash by default), its
// params, and the headers as received. GET /__count tells how many other
// requests it has served.
'use strict';
const express = require('express');
const version = require('express/package.json').version;

const app = express();
let count = 0;

app.use((req, res, next) => {
  // Express sends no Server header: name it, so the test knows who answers.
  res.set('Server', 'Express/' + version);
  if (req.path !== '/__count') count++;
  next();
});

function echo(route) {
  return (req, res) => {
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
    }
    res.json({
      server: 'Express/' + version, method: req.method, path: req.path,
      request_uri: req.originalUrl, route, params: req.params, headers,
    });
  };
}

app.get('/__count', (req, res) => res.json({ count }));
app.post('/api/v1/:env/sms/send', echo('sms/send'));
app.all('*', echo('catch-all'));

app.listen(Number(process.argv[2]), '127.0.0.1');
