"""Image captioning on MS COCO (Karpathy split) with h-detach: Show & Tell and
Show, Attend & Tell, trained through the project's one training loop.

Modules, in the order data flows through them:

- ``data``: the Karpathy split file, the vocabulary, COCO-format annotations and results
- ``synth``: a generated data set in the same formats (shapes scenes, grammar captions)
- ``features``: a torchvision backbone's pooled vector and spatial map per image, on disk
- ``models``: the two decoders around ``hdetach.LSTMCell``
- ``decode``: greedy and beam search
- ``metrics``: BLEU, METEOR, ROUGE-L, CIDEr through pycocoevalcap; the image-blind baseline
- ``task``: the captioning task behind the training loop's task interface
- ``cli``: the ``hdetach caption`` subcommands
"""
