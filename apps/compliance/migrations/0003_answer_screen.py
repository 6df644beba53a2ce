from django.db import migrations, models


class Migration(migrations.Migration):
    # Numbered 0004: 0002/0003 are being added concurrently (surrogate de-identification); the
    # dependency is renumbered when the branches are merged.
    dependencies = [
        ("compliance", "0002_surrogate_mode"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelpolicy",
            name="answer_screen",
            field=models.CharField(
                blank=True,
                choices=[("", "default"), ("off", "Off"), ("redact", "Redact"), ("alert", "Alert")],
                default="",
                help_text="Identifiers in the model's answers: off, redact or alert; empty: redact for a PHI model, else off",
                max_length=8,
            ),
        ),
    ]
