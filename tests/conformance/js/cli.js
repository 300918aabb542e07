// The command-line contract every conformance script follows: `node SCRIPT COMMAND` reads
// one JSON object on stdin and prints one JSON object, the command's result or, when the
// client threw, {error, code, message, status, data, responseDataRaw} from the exception.
'use strict';

async function run(commands) {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const cfg = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  let result;
  try {
    result = await commands[process.argv[2]](cfg);
  } catch (err) {
    result = {
      error: err.name || err.constructor.name, code: err.code,
      message: String(err.message).slice(0, 2000),
      status: err.response && err.response.status, data: err.response && err.response.data,
      responseDataRaw: err.responseDataRaw,
    };
  }
  process.stdout.write(JSON.stringify(result));
}

module.exports = { run };
