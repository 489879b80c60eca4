"""(Re)write the model card of an exported SpeakerLM folder, e.g. after new evaluation results.

    python hub_card/generate_card.py EXPORT_DIR --results results.json --card-info card_info.yaml

The logic and the template ship with the package (`speakerlm_hf.model_card`,
`speakerlm_hf/model_card_template.md`) because `speakerlm export` writes the same card.
"""

import sys

from speakerlm_hf.model_card import main

if __name__ == "__main__":
    sys.exit(main())
